// fleetrun HTML report: tooltips for the timeline's bars.
// The details come from the JSON blob #fr-data; bar i (data-i) is attempt i.
// User data is only ever set with textContent, never parsed as HTML.
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
    SIGNAL = 8, TIMED_OUT = 9, REASON = 10, CRITICAL = 11, LOG = 12;

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

  function show(i, x, y) {
    var b = data.bars[i];
    if (!b) {
      return;
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
    tip.hidden = false;
    place(x, y);
  }

  function place(x, y) {
    // Keep the tooltip inside the viewport, beside the pointer.
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = x + 14 + w > window.innerWidth ? Math.max(4, x - 14 - w) : x + 14;
    var top = y + 14 + h > window.innerHeight ? Math.max(4, y - 14 - h) : y + 14;
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }

  var current = -1;
  chart.addEventListener("mousemove", function (ev) {
    var attr = ev.target && ev.target.getAttribute ? ev.target.getAttribute("data-i") : null;
    if (attr === null) {
      current = -1;
      tip.hidden = true;
      return;
    }
    var i = Number(attr);
    if (i !== current) {
      current = i;
      show(i, ev.clientX, ev.clientY);
    } else {
      place(ev.clientX, ev.clientY);
    }
  });
  chart.addEventListener("mouseleave", function () {
    current = -1;
    tip.hidden = true;
  });
})();
