// fsmlog console: auto-refresh, copy ids, and the actions (abort, redispatch, redrive).
// The session cookie (HttpOnly, SameSite=Strict) carries the token; fetch sends it same-origin.
"use strict";

function toast(text, bad) {
  const el = document.getElementById("action-result") || document.getElementById("toast");
  el.textContent = text;
  el.className = (el.id === "toast" ? "toast " : "result ") + (bad ? "bad" : "good");
  el.hidden = false;
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {}),
  });
  let doc = {};
  try { doc = await response.json(); } catch (e) { doc = {error: response.statusText}; }
  if (!response.ok) { throw new Error(doc.error || response.statusText); }
  return doc;
}

function reloadSoon() { window.setTimeout(() => window.location.reload(), 700); }

function autoRefresh() {
  const box = document.getElementById("auto-refresh");
  if (!box) { return; }
  const key = "fsmlog-refresh-" + document.body.dataset.page;
  if (window.localStorage.getItem(key) === "off") { box.checked = false; }
  let timer = null;
  const arm = () => {
    if (timer) { window.clearTimeout(timer); timer = null; }
    const seconds = Number(box.dataset.seconds);
    if (box.checked && seconds > 0) { timer = window.setTimeout(() => window.location.reload(), 1000 * seconds); }
  };
  box.addEventListener("change", () => { window.localStorage.setItem(key, box.checked ? "on" : "off"); arm(); });
  arm();
}

function copyButtons() {
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(button.dataset.copy); toast("copied " + button.dataset.copy); }
      catch (e) { window.prompt("copy the id", button.dataset.copy); }
    });
  }
}

function machineActions() {
  const abort = document.getElementById("abort-form");
  if (abort) {
    abort.addEventListener("submit", async (e) => {
      e.preventDefault();
      const id = abort.dataset.id;
      const reason = document.getElementById("abort-reason").value;
      if (!window.confirm("Abort machine " + id + "? No further step will run.")) { return; }
      try {
        const doc = await post("/api/machines/" + encodeURIComponent(id) + "/abort", {reason});
        toast("aborted in state " + doc.aborted.state + " at step " + doc.aborted.steps);
        reloadSoon();
      } catch (err) { toast(err.message, true); }
    });
  }
  const open = document.getElementById("redispatch-button");
  const preview = document.getElementById("redispatch-preview");
  if (open && preview) {
    open.addEventListener("click", () => { preview.hidden = false; open.hidden = true; });
    document.getElementById("redispatch-cancel").addEventListener("click", () => { preview.hidden = true; open.hidden = false; });
    const confirm = document.getElementById("redispatch-confirm");
    confirm.addEventListener("click", async () => {
      try {
        const doc = await post("/api/machines/" + encodeURIComponent(confirm.dataset.id) + "/redispatch", {});
        if (doc.written) {
          const r = doc.redispatched;
          toast("redispatched: appended a retry record, step " + r.steps + ", state " + r.state + ", retries " + r.retries);
        } else {
          toast("machine has ended (" + doc.machine.status + "); nothing was written");
        }
        preview.hidden = true;
        reloadSoon();
      } catch (err) { toast(err.message, true); }
    });
  }
}

function redriveButtons() {
  for (const button of document.querySelectorAll("button.redrive")) {
    button.addEventListener("click", async () => {
      const id = button.dataset.letter;
      if (!window.confirm("Append the bytes of dead letter " + id + " to the stream again?")) { return; }
      try {
        const doc = await post("/api/dead-letters/" + encodeURIComponent(id) + "/redrive", {});
        toast("redriven " + doc.redriven + " to " + doc.log);
        window.setTimeout(() => { window.location.href = "/dead-letters"; }, 700);
      } catch (err) { toast(err.message, true); }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  autoRefresh(); copyButtons(); machineActions(); redriveButtons();
});
