/* Progressive enhancement for the report: sortable tables and a filter box per section.
   The page reads fully without it. It takes no data from the page other than the text already shown,
   never builds HTML from strings, and is allowed by the page's Content-Security-Policy hash. */
(function () {
  "use strict";
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };

  function cellKey(row, index) {
    var cell = row.cells[index];
    if (!cell) { return ""; }
    var key = cell.getAttribute("data-sort");
    return (key !== null ? key : cell.textContent).trim();
  }

  function compare(a, b) {
    var x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) { return x - y; }
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  each(document.querySelectorAll("table.data"), function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    var heads = table.tHead.rows[0].cells;
    each(heads, function (th, index) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      button.title = "Sort by this column";
      // Printed, the heading is this plain text: Chromium leaves a button blank in the heading rows
      // it repeats at the top of each page.
      var label = document.createElement("span");
      label.className = "print-label";
      label.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(label);
      th.appendChild(button);
      button.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        each(heads, function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        rows.sort(function (r1, r2) {
          var order = compare(cellKey(r1, index), cellKey(r2, index));
          return ascending ? order : -order;
        });
        each(rows, function (row) { body.appendChild(row); });
      });
    });
  });

  each(document.querySelectorAll("section[data-filter]"), function (section) {
    var rows = Array.prototype.slice.call(section.querySelectorAll("table.data tbody tr"));
    if (!rows.length) { return; }
    var bar = document.createElement("div");
    bar.className = "filter";
    var input = document.createElement("input");
    input.type = "search";
    input.placeholder = "Filter these rows\u2026";
    input.setAttribute("aria-label", "Filter the rows of this section");
    bar.appendChild(input);
    var severities = [];
    each(rows, function (row) {
      var sev = row.getAttribute("data-severity");
      if (sev && severities.indexOf(sev) === -1) { severities.push(sev); }
    });
    var select = null;
    if (severities.length > 1) {
      select = document.createElement("select");
      select.setAttribute("aria-label", "Show one severity");
      var all = document.createElement("option");
      all.value = "";
      all.textContent = "All severities";
      select.appendChild(all);
      each(severities, function (sev) {
        var option = document.createElement("option");
        option.value = sev;
        option.textContent = sev;
        select.appendChild(option);
      });
      bar.appendChild(select);
    }
    var status = document.createElement("span");
    status.className = "filter-status";
    status.setAttribute("aria-live", "polite");
    bar.appendChild(status);
    var heading = section.querySelector("h2");
    section.insertBefore(bar, heading ? heading.nextSibling : section.firstChild);

    function apply() {
      var text = input.value.trim().toLowerCase();
      var severity = select ? select.value : "";
      var visible = 0;
      each(rows, function (row) {
        var show = (!text || row.textContent.toLowerCase().indexOf(text) !== -1) &&
          (!severity || row.getAttribute("data-severity") === severity);
        row.hidden = !show;
        if (show) { visible += 1; }
      });
      each(section.querySelectorAll(".group"), function (group) {
        group.hidden = !group.querySelector("tbody tr:not([hidden])");
      });
      status.textContent = (text || severity) ? visible + " of " + rows.length + " rows shown" : "";
    }
    input.addEventListener("input", apply);
    if (select) { select.addEventListener("change", apply); }
  });
})();
