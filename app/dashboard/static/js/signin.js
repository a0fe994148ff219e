// Presenter sign-in: on a server where the admin controls need a token (`--audience`,
// `--admin-token`), the presenter types it once here; `POST /api/session` answers with an
// HttpOnly session cookie (the page never sees it, scripts cannot read it) and the page
// reloads, so every request and the `/ws` stream carry it. Sign out: `DELETE /api/session`.
// The link shows only when there is a token to sign in with and this page lacks the admin
// controls; "Sign out" only when a session cookie is what gave them.

import { call } from "./api.js";

const $ = (id) => document.getElementById(id);

export function initSignIn(session) {
  const area = $("signin-area");
  if (!area) return;
  const signedIn = !!(session && session.signed_in);
  const offer = !!(session && session.can_sign_in && !session.can_admin && !signedIn);
  area.hidden = !(offer || signedIn);
  $("signin-open").hidden = !offer;
  $("signout").hidden = !signedIn;
  if (area.dataset.wired) return;
  area.dataset.wired = "1";

  const overlay = $("signin-overlay");
  const form = $("signin-form");
  const token = $("signin-token");
  const error = $("signin-error");
  const close = () => { overlay.hidden = true; token.value = ""; error.hidden = true; };
  $("signin-open").addEventListener("click", () => {
    overlay.hidden = false;
    token.focus();
  });
  $("signin-cancel").addEventListener("click", close);
  overlay.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await call("POST", "/api/session", { token: token.value });
    } catch (err) {
      error.textContent = err.status === 401 ? "That is not the admin token." : err.message;
      error.hidden = false;
      token.select();
      return;
    }
    token.value = "";
    window.location.reload(); // the stream and every control start again with the cookie
  });
  $("signout").addEventListener("click", async () => {
    try { await call("DELETE", "/api/session"); } catch (err) { /* the cookie is cleared or already gone */ }
    window.location.reload();
  });
}
