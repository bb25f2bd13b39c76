// Small helpers for htmx-refreshed pages. Loaded after htmx (both deferred).
(function () {
  "use strict";
  var KEY = "scripthut:groups";

  function choices() {
    try { return JSON.parse(sessionStorage.getItem(KEY) || "{}"); } catch (e) { return {}; }
  }

  // Task groups are re-rendered every poll: remember which ones the user opened or
  // closed (by clicking their summary) and re-apply that to fresh content.
  document.addEventListener("click", function (event) {
    var summary = event.target.closest && event.target.closest("details.group > summary");
    if (!summary) return;
    var details = summary.parentElement;
    setTimeout(function () {
      var all = choices();
      all[details.dataset.key] = details.open;
      sessionStorage.setItem(KEY, JSON.stringify(all));
    }, 0);
  });

  function restoreGroups(root) {
    var all = choices();
    root.querySelectorAll("details.group[data-key]").forEach(function (details) {
      var choice = all[details.dataset.key];
      if (choice !== undefined) details.open = choice;
    });
  }

  // Logs: keep following the end of the file unless the reader scrolled up.
  var following = true;
  document.addEventListener("htmx:beforeSwap", function () {
    var log = document.querySelector("pre.log[data-follow]");
    if (log) following = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
  });
  function followLog(root) {
    var log = root.querySelector("pre.log[data-follow]");
    if (log && following) log.scrollTop = log.scrollHeight;
  }

  // The Content-Security-Policy allows no inline style or script, so the pages carry data
  // attributes and this file does the rest: bar widths (data-width, in percent), select
  // boxes that submit their form (data-autosubmit), forms that ask first (data-confirm).
  function applyWidths(root) {
    root.querySelectorAll("[data-width]").forEach(function (bar) {
      bar.style.width = bar.dataset.width + "%";
    });
    root.querySelectorAll("[data-left]").forEach(function (mark) {
      mark.style.left = mark.dataset.left + "%";
    });
  }

  // The timeline redraws itself when pushed updates arrive (at most every few seconds).
  var timelineDue = null;
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (timelineDue) return;
    timelineDue = setTimeout(function () {
      timelineDue = null;
      document.body.dispatchEvent(new CustomEvent("timeline-refresh"));
    }, 3000);
  });
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (select.matches && select.matches("select[data-autosubmit]") && select.form) select.form.submit();
  });
  document.addEventListener("submit", function (event) {
    var question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  function onLoad(root) {
    applyWidths(root);
    restoreGroups(root);
    followLog(root);
  }

  if (window.htmx) {
    htmx.onLoad(onLoad); // runs for the initial page and for every swapped-in fragment
  } else {
    document.addEventListener("DOMContentLoaded", function () { onLoad(document); });
  }
})();
