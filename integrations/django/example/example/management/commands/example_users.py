from django.contrib.auth.models import User
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Makes the example site's users: alice (staff) and bob."

    def handle(self, *args, **options):
        User.objects.create_user("alice", is_staff=True)
        User.objects.create_user("bob")
