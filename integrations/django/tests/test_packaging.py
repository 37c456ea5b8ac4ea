"""`pip install ./integrations/django` gives a package that works: the wheel holds the
templates, the scripts and the template tags, not only the modules."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_everything_the_pages_and_tags_need(tmp_path):
    # Built from a copy: a build leaves its `build/` directory next to the sources.
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path), str(source)], check=True)
    (wheel,) = tmp_path.glob("django_tracking_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ["tracking/middleware.py", "tracking/templatetags/tracking_tags.py",
                   "tracking/templates/tracking/visitor_map.html",
                   "tracking/templates/tracking/live.html", "tracking/templates/tracking/base.html",
                   "tracking/assets/visitor_map.js", "tracking/assets/live.js",
                   "tracking/assets/tracking.css", "tracking/urls.py"]:
        assert needed in names, f"{needed} is not in {wheel.name}"
    assert not any(n.startswith("tests/") for n in names)
