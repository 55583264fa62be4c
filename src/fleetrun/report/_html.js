// fleetrun HTML report: tooltips for the timeline's bars.
// The details come from the JSON blob #fr-data; bar i (data-i) is attempt i.
// User data is only ever set with textContent, never parsed as HTML.
// A bar shows its tooltip under the pointer, or at the bar when it has keyboard
// focus; Escape hides it until the pointer or the focus moves to a bar again.
// The chart is one tab stop (the WAI-ARIA roving tabindex): the arrow keys, Home and
// End move the focus between bars, and Tab leaves the chart.
(function () {
  "use strict";
  var blob = document.getElementById("fr-data");
  var chart = document.getElementById("fr-chart");
  var tip = document.getElementById("fr-tip");
  if (!blob || !chart || !tip) {
    return;
  }
  var data = JSON.parse(blob.textContent);
  // Field order of each bar's details (see _html_timeline._detail).
  var KEY = 0, TASK = 1, TARGET = 2, N = 3, START = 4, DUR = 5, OUTCOME = 6, EXIT = 7,
    SIGNAL = 8, TIMED_OUT = 9, REASON = 10, CRITICAL = 11, LOG = 12, QUEUED = 13,
    QUEUED_FOR = 14;

  function secs(s) {
    if (s === null || s === undefined) {
      return "still running when the run ended";
    }
    if (s < 60) {
      return s.toFixed(3) + "s";
    }
    var tenths = Math.round(s * 10);  // rounded once: 119.97 reads 2m00.0s
    var m = Math.floor(tenths / 600);
    var rest = (tenths % 600) / 10;
    if (m < 60) {
      return m + "m" + (rest < 10 ? "0" : "") + rest.toFixed(1) + "s";
    }
    return Math.floor(m / 60) + "h" + ("0" + (m % 60)).slice(-2) + "m";
  }

  // Fills the tooltip with bar i's details; false when there are none.
  function fill(i) {
    var b = data.bars[i];
    if (!b) {
      return false;
    }
    var rows = [
      ["instance", b[KEY]],
      ["task", b[TASK]],
      ["target", b[TARGET] === null ? "(none)" : b[TARGET]],
      ["attempt", String(b[N])],
      ["started", "+" + secs(b[START])],
      ["duration", secs(b[DUR])],
      ["outcome", (b[OUTCOME] || "no end recorded") + (b[TIMED_OUT] ? " (timed out)" : "")],
    ];
    if (b[EXIT] !== null) {
      rows.push(["exit code", String(b[EXIT])]);
    }
    if (b[SIGNAL] !== null) {
      rows.push(["signal", String(b[SIGNAL])]);
    }
    if (b[QUEUED_FOR]) {
      rows.push(["queued", secs(b[QUEUED]) + " before it started: " + b[QUEUED_FOR]]);
    }
    if (b[REASON]) {
      rows.push(["retry reason", b[REASON]]);
    }
    if (b[CRITICAL]) {
      rows.push(["critical path", "yes"]);
    }
    if (b[LOG]) {
      rows.push(["log", b[LOG]]);
    }
    var table = document.createElement("table");
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      var td = document.createElement("td");
      th.textContent = r[0];
      td.textContent = r[1];
      tr.appendChild(th);
      tr.appendChild(td);
      table.appendChild(tr);
    });
    tip.replaceChildren(table);
    return true;
  }

  function place(x, y) {
    // Keep the tooltip inside the viewport, beside the pointer.
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = x + 14 + w > window.innerWidth ? Math.max(4, x - 14 - w) : x + 14;
    var top = y + 14 + h > window.innerHeight ? Math.max(4, y - 14 - h) : y + 14;
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }

  function placeAtBar(bar) {
    // Below the bar, from its left edge; above it when there is no room below.
    var r = bar.getBoundingClientRect();
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = Math.max(4, Math.min(r.left, window.innerWidth - 4 - w));
    var top = r.bottom + 6 + h > window.innerHeight ? Math.max(4, r.top - 6 - h) : r.bottom + 6;
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }

  function index(el) {
    var attr = el && el.getAttribute ? el.getAttribute("data-i") : null;
    return attr === null ? -1 : Number(attr);
  }

  // The bars by row: rows[k] holds the k-th row that has bars (rows are drawn top to
  // bottom, each in time order), at[i] is [k, position in the row] of bar i, and all
  // holds every bar in drawing order.
  var rows = [], at = {}, all = [];
  Array.prototype.forEach.call(chart.querySelectorAll("rect.bar[data-i]"), function (bar) {
    var r = bar.getAttribute("data-r");
    var row = rows[rows.length - 1];
    if (!row || row.r !== r) {
      row = {r: r, bars: []};
      rows.push(row);
    }
    at[index(bar)] = [rows.length - 1, row.bars.length];
    row.bars.push(bar);
    all.push(bar);
  });

  // Invariant: exactly one bar has tabindex 0 (stop), the one focused last, the first
  // drawn until then; the markup starts that way, so the page is right without script.
  var stop = chart.querySelector('rect.bar[tabindex="0"]');
  function rove(bar) {
    if (bar !== stop) {
      if (stop) {
        stop.setAttribute("tabindex", "-1");
      }
      bar.setAttribute("tabindex", "0");
      stop = bar;
    }
  }

  // The bar of row k that starts nearest to start; the earlier one on a tie.
  function nearest(k, start) {
    var best = null, gap = Infinity;
    rows[k].bars.forEach(function (bar) {
      var d = Math.abs(data.bars[index(bar)][START] - start);
      if (d < gap) {
        best = bar;
        gap = d;
      }
    });
    return best;
  }

  // Where a key moves the focus from bar: a bar (itself at an edge), or null for a key
  // the chart does not handle.
  function destination(bar, ev) {
    var pos = at[index(bar)];
    if (!pos || ev.altKey || ev.metaKey || ev.shiftKey) {
      return null;
    }
    var k = pos[0], row = rows[k].bars, n = pos[1];
    if (ev.key === "Home" || ev.key === "End") {
      var from = ev.ctrlKey ? all : row;
      return ev.key === "Home" ? from[0] : from[from.length - 1];
    }
    if (ev.ctrlKey) {
      return null;
    }
    var start = data.bars[index(bar)][START];
    switch (ev.key) {
      case "ArrowRight":
        return row[Math.min(n + 1, row.length - 1)];
      case "ArrowLeft":
        return row[Math.max(n - 1, 0)];
      case "ArrowDown":
        return k + 1 < rows.length ? nearest(k + 1, start) : bar;
      case "ArrowUp":
        return k > 0 ? nearest(k - 1, start) : bar;
    }
    return null;
  }

  // Invariant: the tooltip is hidden exactly when current is -1.
  var current = -1;  // the bar whose details the tooltip shows
  var hover = -1;  // the bar under the pointer
  var pointerX = 0, pointerY = 0;
  var focused = null;  // the bar with keyboard focus
  var byFocus = false;  // the focus moved last, not the pointer: its bar wins
  var dismissed = -1;  // the bar whose tooltip Escape hid

  // Shows the tooltip the last move asks for: the focused bar's at the bar, else the
  // hovered bar's at the pointer; nothing for a dismissed bar.
  function update() {
    var f = index(focused);
    var atBar = f >= 0 && (byFocus || hover < 0);
    var i = atBar ? f : hover;
    if (i < 0 || i === dismissed || (i !== current && !fill(i))) {
      current = -1;
      tip.hidden = true;
      return;
    }
    current = i;
    tip.hidden = false;
    if (atBar) {
      placeAtBar(focused);
    } else {
      place(pointerX, pointerY);
    }
  }

  function keyboardFocus(el) {
    // A click focuses a bar too; only keyboard focus moves the tooltip to the bar.
    try {
      return el.matches(":focus-visible");
    } catch (e) {
      return true;  // no :focus-visible in this browser: treat all focus alike
    }
  }

  chart.addEventListener("mousemove", function (ev) {
    var i = index(ev.target);
    pointerX = ev.clientX;
    pointerY = ev.clientY;
    if (i !== hover) {
      hover = i;
      if (i >= 0) {
        byFocus = false;
        dismissed = -1;
      }
    }
    update();
  });
  chart.addEventListener("mouseleave", function () {
    hover = -1;
    update();
  });
  // Focus listeners go on the document: Chromium makes an SVG element that has its own
  // focus listeners focusable, which would put the whole chart in the tab order.
  document.addEventListener("focusin", function (ev) {
    if (!chart.contains(ev.target) || index(ev.target) < 0) {
      return;
    }
    rove(ev.target);  // a click moves the tab stop too: Shift+Tab comes back to this bar
    if (!keyboardFocus(ev.target)) {
      return;
    }
    focused = ev.target;
    // The tooltip describes the focused bar to screen readers too.
    focused.setAttribute("aria-describedby", "fr-tip");
    byFocus = true;
    dismissed = -1;
    update();
  });
  document.addEventListener("focusout", function (ev) {
    if (ev.target === focused) {
      focused.removeAttribute("aria-describedby");
      focused = null;
      byFocus = false;
      update();
    }
  });
  document.addEventListener("keydown", function (ev) {
    if ((ev.key === "Escape" || ev.key === "Esc") && current >= 0) {
      dismissed = current;
      update();
      return;
    }
    if (!chart.contains(ev.target) || index(ev.target) < 0) {
      return;
    }
    var to = destination(ev.target, ev);
    if (to) {
      // A handled key never scrolls the page; focus() scrolls the new bar into view
      // below the sticky header (scroll-padding-top).
      ev.preventDefault();
      if (to !== ev.target) {
        to.focus();
      }
    }
  });
  // The tooltip is fixed to the viewport: keep it at its bar while the page or the chart
  // scrolls (capture: scroll events of the chart's box do not bubble).
  function follow() {
    if (current >= 0 && current === index(focused)) {
      placeAtBar(focused);
    }
  }
  window.addEventListener("scroll", follow, true);
  window.addEventListener("resize", follow);

  // Focusing a bar scrolls it into view below the sticky header, which wraps to more
  // lines on a narrow window (the stylesheet's scroll-padding is the fallback).
  var header = document.querySelector("header.top");
  function padScroll() {
    if (header) {
      document.documentElement.style.scrollPaddingTop = header.offsetHeight + 12 + "px";
    }
  }
  padScroll();
  window.addEventListener("resize", padScroll);
})();
