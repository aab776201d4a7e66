// taatom-jobs dashboard: confirmation dialogs and auto-refresh. No framework, no build step.
(function () {
  "use strict";

  // Forms with data-confirm ask first (delete, retry all). Delegated, so it survives refreshes.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // A notice after an action is shown once: drop it from the address bar.
  var url = new URL(window.location.href);
  if (url.searchParams.has("notice")) {
    url.searchParams.delete("notice");
    url.searchParams.delete("n");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) {
    return;
  }
  var storageKey = "taatom-jobs:auto-refresh";
  var enabled = window.localStorage.getItem(storageKey) !== "off";
  var toggle = document.querySelector("[data-refresh-toggle]");
  function label() {
    toggle.textContent = enabled ? "Auto-refresh: on" : "Auto-refresh: off";
    toggle.setAttribute("aria-pressed", String(enabled));
  }
  if (toggle) {
    toggle.hidden = false;
    label();
    toggle.addEventListener("click", function () {
      enabled = !enabled;
      window.localStorage.setItem(storageKey, enabled ? "on" : "off");
      label();
    });
  }

  // Fetch the same page and swap its live region: one rendering path, no client templates.
  var busy = false;
  function refresh() {
    var live = document.querySelector("[data-live]");
    var focused = document.activeElement;
    if (!enabled || busy || document.hidden || !live || (focused && live.contains(focused) && focused.tagName === "INPUT")) {
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (fresh) {
          live.replaceWith(document.adoptNode(fresh));
        }
        document.body.classList.remove("stale");
      })
      .catch(function () {
        document.body.classList.add("stale");
      })
      .finally(function () {
        busy = false;
      });
  }
  window.setInterval(refresh, seconds * 1000);
})();
