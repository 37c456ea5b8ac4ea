// The login page posts its form to POST /login without any script; this only says why the
// browser is back here after a wrong token, whichever way the agent answered it: a redirect to
// /login?error=..., or the login page itself with status 401.

const navigation = performance.getEntriesByType("navigation")[0];
const refused = navigation && (navigation.responseStatus === 401 || navigation.responseStatus === 403);
// The agent may have put its own message in the page already.
const said = document.querySelector("[role=alert]");
if (!said && (refused || new URLSearchParams(window.location.search).has("error"))) {
  document.getElementById("login-error").textContent = "That token is not right. Try again.";
}
