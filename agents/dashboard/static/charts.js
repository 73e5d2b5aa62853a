// The charts of the admin page and of the HTML report, drawn by uPlot (vendor/, MIT, pinned:
// vendor/README.md). The server renders each chart as an element with its data in a
// `data-chart` attribute (JSON); `crCharts.drawAll(root)` draws every such element under
// root, so the page's live swaps and the report's single file draw them the same way.
// Each axis keeps the labels it drew in `data-ticks-<axis>` (the tests read them).
"use strict";
window.crCharts = (function () {
  const MUTED = "#4b5563";
  const GRID = "#e5e7eb";
  const DURATION_INCRS = [
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400,
    21600, 43200, 86400, 172800, 604800,
  ];
  const TIME_INCRS = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800,
  ];
  const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
  const drawn = new Map(); // element -> its uPlot, destroyed before the element is replaced

  // The same words as the page's Python `duration`: 4.2s, 35s, 2m 05s, 3h 10m, 2d 4h.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    const whole = Math.round(seconds);
    if (whole < 60) return seconds < 10 ? seconds.toFixed(1) + "s" : whole + "s";
    const minutes = Math.floor(whole / 60);
    if (minutes < 60) return minutes + "m " + String(whole % 60).padStart(2, "0") + "s";
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + "h " + String(minutes % 60).padStart(2, "0") + "m";
    return Math.floor(hours / 24) + "d " + (hours % 24) + "h";
  }

  // A tick label of a duration axis: round steps read better without the padding.
  function durationTick(seconds) {
    if (seconds < 60) return (seconds < 10 && seconds % 1 ? seconds.toFixed(1) : seconds) + "s";
    if (seconds < 3600) return seconds % 60 ? duration(seconds) : seconds / 60 + "m";
    if (seconds < 172800) return seconds % 3600 ? duration(seconds) : seconds / 3600 + "h";
    return duration(seconds);
  }

  const pad = (n) => String(n).padStart(2, "0");

  function utcTime(ts, step) {
    const d = new Date(ts * 1000);
    const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    if (step < 60) return hm + ":" + pad(d.getUTCSeconds());
    if (step < 86400) return hm;
    return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
  }

  function fullTime(ts) {
    return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ") + "Z";
  }

  // An axis's `values`: the labels, kept on the element for the tests.
  function labelled(el, name, format) {
    return (u, splits, axisIndex, space, step) => {
      const labels = splits.map((v) => (v === null ? "" : format(v, step)));
      el.dataset["ticks" + name] = JSON.stringify(labels);
      return labels;
    };
  }

  function axis(el, name, format, extra) {
    return Object.assign(
      {
        stroke: MUTED,
        font: "11px system-ui, sans-serif",
        labelFont: "11px system-ui, sans-serif",
        grid: { stroke: GRID, width: 1 },
        ticks: { stroke: GRID, width: 1, size: 5 },
        labelSize: 18,
        labelGap: 0,
        values: labelled(el, name, format),
      },
      extra
    );
  }

  // The values under the cursor, beside it (the legend below shows them too).
  function tooltip(lines) {
    let tip;
    return {
      hooks: {
        init: (u) => {
          tip = document.createElement("div");
          tip.className = "chart-tip";
          Object.assign(tip.style, {
            position: "absolute",
            display: "none",
            pointerEvents: "none",
            background: "#fff",
            border: "1px solid #9ca3af",
            borderRadius: "4px",
            padding: "2px 6px",
            font: "11px system-ui, sans-serif",
            whiteSpace: "pre",
            zIndex: 10,
          });
          u.over.appendChild(tip);
        },
        setCursor: (u) => {
          const idx = u.cursor.idx;
          if (idx === null || idx === undefined || u.cursor.left < 0) {
            tip.style.display = "none";
            return;
          }
          tip.textContent = lines(u, idx).join("\n");
          tip.style.display = "block";
          const left = u.cursor.left + 12;
          tip.style.left = Math.min(left, u.over.clientWidth - tip.offsetWidth) + "px";
          tip.style.top = Math.max(0, u.cursor.top - tip.offsetHeight - 8) + "px";
        },
      },
    };
  }

  function size(el, height) {
    const width = (el.querySelector(".plot") || el).clientWidth || 460;
    return { width: Math.max(320, Math.min(width, 900)), height: height };
  }

  // Ticks from 0 in the smallest step of `incrs` that needs at most 5: at least 3 labelled
  // ticks (successive steps differ by at most 3.5 times), however small the chart. The
  // scale ends at the last tick, above `top`.
  function ticksTo(top, incrs) {
    const step = incrs.find((incr) => top / incr <= 5) || incrs[incrs.length - 1];
    const splits = [];
    for (let v = 0; v <= Math.max(2, Math.ceil(top / step - 1e-9)) * step + 1e-9; v += step) {
      splits.push(Math.round(v * 1000) / 1000);
    }
    return splits;
  }

  // MTTR mean, p50 and p90 (lines, left axis) and failures (bars, right axis) per window,
  // with the SLO as a dashed line. Equal values (one recovery in a window) would hide each
  // other: the series differ in width, dash and point size as well as colour.
  function trend(el, spec) {
    const half = spec.window_s / 2;
    const x = spec.starts.map((s) => s + half);
    const values = [...spec.mean, ...spec.p50, ...spec.p90].filter((v) => v !== null);
    const highest = Math.max(1, ...values);
    const mttrTicks = ticksTo(Math.max(highest, spec.slo_in_view ? spec.slo_s : 0) * 1.1, DURATION_INCRS);
    const countTicks = ticksTo(Math.max(1, ...spec.failures), COUNT_INCRS);
    const line = (label, stroke, width, dash, point) => ({
      label: label,
      scale: "s",
      stroke: stroke,
      width: width,
      dash: dash,
      spanGaps: false,
      points: { show: true, size: point, fill: stroke, stroke: stroke },
      value: (u, v) => duration(v),
    });
    const series = [
      { label: "window (UTC)", value: (u, v) => (v === null ? "-" : fullTime(v - half)) },
      {
        label: "failures",
        scale: "n",
        fill: "#cbd5e1",
        stroke: "#94a3b8",
        width: 1,
        paths: uPlot.paths.bars({ size: [0.6, 60] }),
        points: { show: false },
      },
      line("mean", "#93c5fd", 5, [], 11),
      line("p50", "#059669", 2, [6, 3], 7),
      line("p90", "#d97706", 1.5, [], 4),
    ];
    const data = [x, spec.failures, spec.mean, spec.p50, spec.p90];
    if (spec.slo_in_view) {
      series.push({
        label: "SLO",
        scale: "s",
        stroke: "#dc2626",
        width: 1.5,
        dash: [5, 4],
        points: { show: false },
        paths: () => null, // drawn across the whole plot by `sloLine`
        value: () => duration(spec.slo_s),
      });
      data.push(x.map(() => spec.slo_s));
    }
    // The SLO from edge to edge of the plot, not only between the first and last window.
    const sloLine = (u) => {
      if (!spec.slo_in_view) return;
      const y = Math.round(u.valToPos(spec.slo_s, "s", true));
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#dc2626";
      ctx.lineWidth = 1.5 * uPlot.pxRatio;
      ctx.setLineDash([5 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, y);
      ctx.lineTo(u.bbox.left + u.bbox.width, y);
      ctx.stroke();
      ctx.restore();
    };
    const first = spec.starts[0];
    const last = spec.starts[spec.starts.length - 1] + spec.window_s;
    return new uPlot(
      Object.assign(size(el, 210), {
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: {
          x: { time: true, range: () => [first, last] },
          s: { range: () => [0, mttrTicks[mttrTicks.length - 1]] },
          n: { range: () => [0, countTicks[countTicks.length - 1]] },
        },
        axes: [
          axis(el, "X", utcTime, {
            incrs: TIME_INCRS,
            space: 56,
            size: 30,
            label: "window start (UTC)",
          }),
          axis(el, "Y", durationTick, {
            scale: "s",
            splits: () => mttrTicks,
            size: 50,
            label: "MTTR",
          }),
          axis(el, "Y2", (v) => String(v), {
            scale: "n",
            side: 1,
            splits: () => countTicks,
            grid: { show: false },
            size: 36,
            label: "failures",
          }),
        ],
        series: series,
        legend: { live: true },
        hooks: { draw: [sloLine] },
        plugins: [
          tooltip((u, i) => [
            "window " + fullTime(u.data[0][i] - half),
            "failures " + u.data[1][i],
            "mean " + duration(u.data[2][i]),
            "p50 " + duration(u.data[3][i]),
            "p90 " + duration(u.data[4][i]),
          ]),
        ],
      }),
      data,
      el.querySelector(".plot") || el
    );
  }

  // The report: each recovery's MTTR (y) against when it recovered (x, UTC).
  function recoveries(el, spec) {
    const colours = spec.colours;
    const times = spec.recovered_at;
    const span = times.length ? times[times.length - 1] - times[0] : 0;
    const margin = Math.max(span / 20, 30);
    const first = (times[0] || 0) - margin;
    const last = (times[times.length - 1] || 0) + margin;
    const mttrTicks = ticksTo(Math.max(1, ...spec.mttr_s) * 1.1, DURATION_INCRS);
    return new uPlot(
      Object.assign(size(el, 240), {
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        scales: {
          x: { time: true, range: () => [first, last] },
          y: { range: () => [0, mttrTicks[mttrTicks.length - 1]] },
        },
        axes: [
          axis(el, "X", utcTime, {
            incrs: TIME_INCRS,
            space: 64,
            size: 32,
            label: "recovered at (UTC)",
            stroke: colours.axis,
            border: { show: true, stroke: colours.axis, width: 2 },
            ticks: { stroke: colours.axis, width: 2, size: 6 },
          }),
          axis(el, "Y", durationTick, {
            splits: () => mttrTicks,
            size: 56,
            label: "MTTR",
            stroke: colours.axis,
            border: { show: true, stroke: colours.axis, width: 2 },
            ticks: { stroke: colours.axis, width: 2, size: 6 },
          }),
        ],
        series: [
          { label: "recovered at (UTC)", value: (u, v) => (v === null ? "-" : fullTime(v)) },
          {
            label: "MTTR",
            stroke: colours.point,
            paths: () => null,
            points: { show: true, size: 9, fill: colours.point, stroke: colours.point },
            value: (u, v) => duration(v),
          },
        ],
        plugins: [
          tooltip((u, i) => [fullTime(u.data[0][i]), "MTTR " + duration(u.data[1][i])]),
        ],
      }),
      [times, spec.mttr_s],
      el.querySelector(".plot") || el
    );
  }

  // The report: how many recoveries took how long, by bucket.
  function distribution(el, spec) {
    const colours = spec.colours;
    const x = spec.buckets.map((_, i) => i);
    const countTicks = ticksTo(Math.max(1, ...spec.counts), COUNT_INCRS);
    return new uPlot(
      Object.assign(size(el, 220), {
        scales: {
          x: { time: false, range: () => [-0.6, x.length - 0.4] },
          y: { range: () => [0, countTicks[countTicks.length - 1]] },
        },
        axes: [
          axis(el, "X", (v) => spec.buckets[v] || "", {
            incrs: [1],
            space: 20,
            size: 30,
            label: "MTTR",
            stroke: colours.axis,
          }),
          axis(el, "Y", (v) => String(v), {
            splits: () => countTicks,
            size: 40,
            label: "recoveries",
            stroke: colours.axis,
          }),
        ],
        series: [
          { label: "MTTR", value: (u, v) => (v === null ? "-" : spec.buckets[v]) },
          {
            label: "recoveries",
            fill: colours.bar,
            stroke: colours.bar,
            paths: uPlot.paths.bars({ size: [0.8, 80] }),
            points: { show: false },
          },
        ],
        plugins: [tooltip((u, i) => ["MTTR " + spec.buckets[i], u.data[1][i] + " recoveries"])],
      }),
      [x, spec.counts],
      el.querySelector(".plot") || el
    );
  }

  const KINDS = { trend: trend, recoveries: recoveries, distribution: distribution };

  function drawAll(root) {
    for (const [el, chart] of drawn) {
      if (!el.isConnected) {
        chart.destroy();
        drawn.delete(el);
      }
    }
    for (const el of root.querySelectorAll("[data-chart]")) {
      if (drawn.has(el)) continue;
      const spec = JSON.parse(el.dataset.chart);
      drawn.set(el, KINDS[spec.kind](el, spec));
    }
  }

  return { drawAll: drawAll, duration: duration };
})();
