// pgqueue dashboard: live fragments. An element with data-refresh="URL" is replaced, every
// data-interval milliseconds, by the HTML the server renders at that URL (escaped there,
// like every page). Polling pauses while the tab is hidden; a failed fetch keeps the last
// good content and marks it stale. Nothing else runs in the page.
"use strict";
(function () {
  function refresh(el) {
    var url = el.getAttribute("data-refresh");
    var interval = parseInt(el.getAttribute("data-interval"), 10) || 2000;
    var busy = false;
    function tick() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          el.classList.remove("stale");
          el.setAttribute("data-refreshed", String(Date.now()));
        })
        .catch(function () { el.classList.add("stale"); })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, interval);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-refresh]");
    for (var i = 0; i < live.length; i++) { refresh(live[i]); }
  });
})();
