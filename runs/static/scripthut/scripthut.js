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
  }
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

  // -- live pages: changes arrive over a websocket (htmx's ws extension swaps each pushed
  // row in place by id). A pushed row whose id is not on the page is new: it is added to
  // the table it names, if that table shows all its rows (data-complete).
  document.addEventListener("htmx:oobErrorNoTarget", function (event) {
    var row = event.detail.content;
    var where = row.dataset.appendTo || row.dataset.prependTo;
    var table = where && document.querySelector(where + "[data-complete]");
    if (!table) return;
    table.querySelectorAll(":scope > tr > td.empty").forEach(function (td) { td.parentElement.remove(); });
    if (row.dataset.prependTo) table.prepend(row); else table.append(row);
    htmx.process(row);
    applyWidths(row);
  });

  // The dashboard's jobs table gains and loses rows by push: recount its header (the pill and
  // the state chips marked data-counts-of) from the rows' state badges.
  function recount(table) {
    var counts = {}, labels = {}, total = 0;
    table.querySelectorAll(":scope > tr > td > .badge").forEach(function (badge) {
      var state = (badge.className.match(/\bst-([\w-]+)/) || [])[1];
      if (!state) return;
      counts[state] = (counts[state] || 0) + 1;
      labels[state] = badge.textContent.trim();
      total += 1;
    });
    document.querySelectorAll('[data-counts-of="#' + table.id + '"]').forEach(function (header) {
      if (header.classList.contains("pill")) { header.textContent = header.textContent.replace(/^\d+/, total); return; }
      var chips = document.createElement("span");
      chips.className = "counts";
      Object.keys(counts).forEach(function (state) {
        var chip = document.createElement("span");
        chip.className = "chip chip-" + state;
        chip.title = counts[state] + " " + labels[state];
        chip.append(document.createElement("i"), counts[state] + " " + labels[state]);
        chips.append(chip);
      });
      header.replaceChildren(chips);
    });
  }
  document.addEventListener("htmx:wsAfterMessage", function () {
    document.querySelectorAll("tbody[id]").forEach(function (table) {
      if (document.querySelector('[data-counts-of="#' + table.id + '"]')) recount(table);
    });
  });

  // Running durations and queue waits count on between pushes (only changes travel): from
  // data-elapsed (seconds when rendered) plus the time since this element arrived, in the
  // format of backends.units.format_duration.
  function formatDuration(seconds) {
    var s = Math.round(seconds), pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (s >= 86400) return Math.floor(s / 86400) + "d " + pad(Math.floor(s % 86400 / 3600)) + "h";
    if (s >= 3600) return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
    if (s >= 60) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    return s + "s";
  }
  setInterval(function () {
    var now = Date.now();
    document.querySelectorAll("[data-elapsed]").forEach(function (clock) {
      if (!clock.dataset.seenAt) clock.dataset.seenAt = now;
      clock.textContent = formatDuration(Number(clock.dataset.elapsed) + (now - Number(clock.dataset.seenAt)) / 1000);
    });
  }, 1000);

  // While the socket is down, the live parts ([data-poll-url]) are fetched every POLL_MS;
  // once it is back, once more (to catch what was missed), then no more.
  var POLL_MS = 2000;
  var poller = null;
  // why: "poll" (the socket is down) or "refresh" (once), sent along so that logs tell them apart.
  function refreshLive(why) {
    document.querySelectorAll("[data-poll-url]").forEach(function (part) {
      var headers = { "X-ScriptHut-Fetch": why === "poll" ? "poll" : "refresh" };
      htmx.ajax("GET", part.dataset.pollUrl, { target: part, swap: "outerHTML", headers: headers });
    });
  }
  document.addEventListener("htmx:wsClose", function (event) {
    if (!poller) poller = setInterval(function () { refreshLive("poll"); }, POLL_MS);
    var code = event.detail.event.code;
    // The extension itself reconnects after an abnormal close; after a clean one (a
    // server restart, a proxy) reconnect too, unless the server refused this user (4xxx).
    if (code < 4000 && [1006, 1011, 1012, 1013].indexOf(code) < 0) {
      setTimeout(event.detail.socketWrapper.reconnect, 3000);
    }
  });
  document.addEventListener("htmx:wsOpen", function () {
    if (poller) { clearInterval(poller); poller = null; refreshLive(); }
  });
  // A change of the run's own status (finished, cancelled) changes its buttons: fetch the part once.
  document.addEventListener("htmx:wsAfterMessage", function (event) {
    if (String(event.detail.message).indexOf("data-refresh-live") >= 0) refreshLive();
  });

  if (window.htmx) {
    htmx.onLoad(onLoad); // runs for the initial page and for every swapped-in fragment
  } else {
    document.addEventListener("DOMContentLoaded", function () { onLoad(document); });
  }
})();
