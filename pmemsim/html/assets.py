# ruff: noqa: E501
"""The page's style sheet and script, inlined into every report (no network, no CDN).

The script only adds to a page that is complete without it: details on hover, the source
line of an operation lit up (and the operations of a source line), zoom, and buttons to
copy a replay command and to open or close every section.
"""

CSS = r"""
:root{--dirty:#ffb703;--flushed:#8ecae6;--persisted:#b7e4c7;--lost:#d00000;--torn:#f77f00;
--ink:#1d1d28;--muted:#6b6b7b;--line:#e3e3ea;--bg:#fbfbfd;--focus:#fff4d6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
main{padding:16px 24px 48px;max-width:2400px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 8px}h3{font-size:15px;margin:14px 0 6px}
code,pre,.mono,.src{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
.muted{color:var(--muted)}
table{border-collapse:collapse}
.checks td,.checks th{padding:3px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
.checks td:first-child,.checks th:first-child{text-align:left}
.checks tr.bad td{background:#fde8e8}
.v-inconsistent{color:var(--lost);font-weight:600}.v-consistent{color:#1b7f3b;font-weight:600}
.facts{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0 10px;padding:0}
.facts div{margin:0}.facts dt{display:inline;color:var(--muted)}.facts dd{display:inline;margin:0 0 0 4px;font-weight:600}
details.failure{border:1px solid var(--line);border-radius:8px;background:#fff;margin:12px 0;padding:0 14px 12px}
details.failure>summary{font-weight:600;font-size:15px;padding:10px 0;cursor:pointer}
.crash-facts p{margin:3px 0}
.replay{display:flex;gap:8px;align-items:center;margin:6px 0}
.replay code{background:#f2f2f6;border:1px solid var(--line);border-radius:4px;padding:3px 6px;user-select:all;overflow-wrap:anywhere}
button{font:inherit;font-size:12px;padding:2px 8px;border:1px solid #c8c8d2;border-radius:4px;background:#fff;cursor:pointer}
.js-only{display:none}html.js .js-only{display:inline-block}
.error{background:#fff5f5;border-left:4px solid var(--lost);padding:6px 10px;margin:8px 0;white-space:pre-wrap}
.warn{background:#fff8e6;border-left:4px solid var(--torn);padding:6px 10px;margin:8px 0}
.view{display:grid;grid-template-columns:minmax(0,1fr) minmax(320px,34%);gap:14px;align-items:start}
@media (max-width:1100px){.view{grid-template-columns:1fr}}
.tl{display:flex;align-items:flex-start;border:1px solid var(--line);border-radius:6px;background:#fff;overflow:hidden}
.tl-scroll{overflow-x:auto;overflow-y:hidden;flex:1 1 auto;min-width:0}
.tl svg{display:block}.tl>svg{flex:none}
.toolbar{display:flex;gap:6px;align-items:center;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted);margin:6px 0}
.legend svg{vertical-align:middle;margin-right:4px}
.src-panel{border:1px solid var(--line);border-radius:6px;background:#fff;max-height:640px;overflow:auto;padding:4px 0}
.src-name{font-weight:600;padding:4px 10px;border-bottom:1px solid var(--line);background:#f7f7fa;position:sticky;top:-4px}
ol.src{list-style:none;margin:0;padding:2px 0}
ol.src li{display:flex;gap:8px;align-items:baseline;padding:0 8px;white-space:pre;border-left:3px solid transparent}
ol.src li.ctx{color:#8a8a99}
ol.src li.skip{color:#b0b0bb}
ol.src .ln{color:#9a9aaa;min-width:3.2em;text-align:right;flex:none}
ol.src code{flex:1 1 auto;overflow:hidden;text-overflow:ellipsis}
ol.src li.ref{background:#f6f7ff;border-left-color:#9aa5d8}
ol.src li.src-flight{background:#fff4d6;border-left-color:var(--dirty)}
ol.src li.src-torn{background:#ffe6cc;border-left-color:var(--torn)}
ol.src li.src-lost{background:#ffe0e0;border-left-color:var(--lost)}
ol.src li.src-raise{background:#f3e8ff;border-left-color:#8e44ad}
ol.src li.hot{outline:2px solid #3a5bd9;outline-offset:-2px}
.badges{flex:none;display:flex;gap:3px}
.b{font:11px system-ui,sans-serif;padding:0 5px;border-radius:8px;background:#ececf3;color:#444}
.b-lost{background:var(--lost);color:#fff}.b-torn{background:var(--torn);color:#fff}
.b-flight{background:var(--dirty)}.b-raise{background:#8e44ad;color:#fff}.b-lint{background:#ffd6a5}
table.lost td,table.lost th{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
table.lost code{white-space:pre}
.s-d{fill:var(--dirty)}.s-f{fill:var(--flushed)}.s-p{fill:var(--persisted)}
.focus{fill:var(--focus)}.gap{fill:#f4f4f7}.fold{fill:url(#hatch)}
.fold-t{font:11px system-ui,sans-serif;fill:#55556a}
.after{fill:#fff;opacity:.6;pointer-events:none}
.bar{stroke:#2b2d42;stroke-width:1.6}.bar.deep{stroke-width:3.2}
.g-s{fill:#2b2d42}.g-nt{fill:#5a189a}.g-f{fill:#fff;stroke:#1d3557;stroke-width:1.6}.g-df{fill:#1d3557}
.g-s.kept,.g-nt.kept{stroke:#1b7f3b;stroke-width:2.5}
.g-s.lost,.g-nt.lost{fill:var(--lost);stroke:#6a0000;stroke-width:2}
.g-s.torn,.g-nt.torn{fill:var(--torn);stroke:var(--lost);stroke-width:2}
.h{font:11px ui-monospace,Menlo,Consolas,monospace;fill:#3a3a4a}
.h-fence,.h-deep_flush{font-weight:700;fill:#000}.h-flush{fill:#1d3557}.h-marker{fill:#7b2cbf}
.h-lost{fill:var(--lost);font-weight:700}.h-torn{fill:var(--torn);font-weight:700}.h-kept{fill:#1b7f3b}
.ax{font:10px system-ui,sans-serif;fill:#8a8a99;text-anchor:middle}
.pt{fill:#b5b5c3}.pt.fail{fill:var(--lost)}
.lint{font:11px sans-serif;text-anchor:middle;fill:#e09f3e}.lint-error{fill:#c2410c}
.crash{stroke:var(--lost);stroke-width:2.5;stroke-dasharray:6 3}
.crash-t{font:bold 12px system-ui,sans-serif;fill:var(--lost);paint-order:stroke;stroke:#fff;stroke-width:4px}
.mk rect{fill:#efe3fb;stroke:#7b2cbf;stroke-width:1}.mk text{font:10px system-ui,sans-serif;fill:#5a189a}
.lb{font:12px ui-monospace,Menlo,Consolas,monospace;fill:#333}
.focus-t{font-weight:700;fill:#000}.group-t{fill:#666;font-style:italic}.gap-t{font-size:10px;fill:#999}
.corner{font:11px system-ui,sans-serif;fill:#8a8a99}
.im{font:12px system-ui,sans-serif}.im-none{fill:#9a9aaa;font-size:11px}
.im-bg.im-bad{fill:#3a3a4a}text.im-bad{fill:#fff;font-weight:700}
.im-bg{fill:#eee}.im-bg.im-kept{fill:#d8f3dc}.im-bg.im-lost{fill:#ffd6d6}.im-bg.im-torn{fill:#ffe1c2}.im-bg.im-reverted{fill:#eadcf8}
text.im-kept{fill:#1b5e20}text.im-lost{fill:#8b0000;font-weight:700}text.im-torn{fill:#9a3412;font-weight:700}text.im-reverted{fill:#5a189a;font-weight:700}
.hl{fill:#3a5bd9;opacity:.12;pointer-events:none}
.tip{position:fixed;z-index:10;pointer-events:none;background:#1d1d28;color:#fff;font-size:12px;line-height:1.4;padding:6px 9px;border-radius:5px;max-width:460px;display:none;box-shadow:0 2px 8px rgba(0,0,0,.25)}
.tip b{color:#ffd166}.tip .m{font-family:ui-monospace,Menlo,Consolas,monospace}
ul.findings{margin:4px 0;padding-left:18px}
ul.findings li.error{color:#9a3412}
pre.text{background:#f7f7fa;border:1px solid var(--line);padding:8px;overflow:auto;font-size:12px}
table.folds td{padding:1px 8px;font-size:12px}
"""

JS = r"""
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  var tip = document.createElement("div");
  tip.className = "tip";
  document.body.appendChild(tip);
  var NS = "http://www.w3.org/2000/svg";

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function showTip(html, ev) {
    tip.innerHTML = html;
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = ev.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 8) y = ev.clientY - r.height - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  function find(list, v) {
    for (var i = 0; i < list.length; i++) {
      if (v >= list[i][0] && v < list[i][0] + list[i][1]) return list[i];
    }
    return null;
  }

  var STATE = {"s-d": "dirty (a store no flush covers)", "s-f": "flushed, waiting for a fence",
               "s-p": "persisted"};

  document.querySelectorAll(".timeline").forEach(function (tl) {
    var id = tl.getAttribute("data-tl");
    var node = document.getElementById("data-" + id);
    if (!node) return;
    var data = JSON.parse(node.textContent);
    var body = tl.querySelector("svg.tl-body");
    var svgs = tl.querySelectorAll(".tl svg");
    var base = [];
    svgs.forEach(function (s) {
      base.push([+s.getAttribute("width"), +s.getAttribute("height")]);
    });
    var scale = 1;
    function zoom(f) {
      var keep = (scroller.scrollLeft + scroller.clientWidth / 2) / scale;
      scale = f === 0 ? 1 : Math.max(0.25, Math.min(4, scale * f));
      svgs.forEach(function (s, i) {
        var bw = base[i][0], bh = base[i][1];
        var w = s.classList.contains("tl-body") ? bw * scale : bw * Math.min(scale, 1.5);
        s.setAttribute("width", w);
        s.setAttribute("height", bh * scale);
        if (!s.classList.contains("tl-body")) {
          s.setAttribute("viewBox", "0 0 " + (w / scale) + " " + bh);
          s.setAttribute("preserveAspectRatio", "xMaxYMin meet");
        }
      });
      scroller.scrollLeft = keep * scale - scroller.clientWidth / 2;
      var label = tl.querySelector(".zoom-level");
      if (label) label.textContent = Math.round(scale * 100) + "%";
    }
    tl.querySelectorAll("[data-zoom]").forEach(function (b) {
      b.addEventListener("click", function () { zoom(+b.getAttribute("data-zoom")); });
    });
    var scroller = tl.querySelector(".tl-scroll");
    if (data.crash !== null && data.crash > scroller.clientWidth * 0.8) {
      // The crash in view: most of what matters is just before it.
      scroller.scrollLeft = data.crash - scroller.clientWidth * 0.7;
    }
    scroller.addEventListener("wheel", function (ev) {
      if (!ev.ctrlKey) return;
      ev.preventDefault();
      zoom(ev.deltaY < 0 ? 1.25 : 0.8);
    }, {passive: false});

    var hl = document.createElementNS(NS, "rect");
    hl.setAttribute("class", "hl");
    hl.setAttribute("y", 0);
    hl.setAttribute("height", body.viewBox.baseVal.height);
    hl.setAttribute("width", 0);
    body.appendChild(hl);
    var hot = null;
    function light(srcId) {
      if (hot) hot.classList.remove("hot");
      hot = srcId ? document.getElementById(srcId) : null;
      if (hot) hot.classList.add("hot");
    }
    function point(ev) {
      var m = body.getScreenCTM();
      if (!m) return null;
      var p = body.createSVGPoint();
      p.x = ev.clientX; p.y = ev.clientY;
      return p.matrixTransform(m.inverse());
    }
    body.addEventListener("mousemove", function (ev) {
      var p = point(ev);
      if (!p) return;
      var col = find(data.cols, p.x);
      if (!col) { hideTip(); return; }
      hl.setAttribute("x", col[0]);
      hl.setAttribute("width", col[1]);
      var row = find(data.rows, p.y);
      var html;
      if (col[3] - col[2] > 1) {
        html = "<b>" + (col[3] - col[2]) + " operations folded</b> (#" + col[2] + " to #" +
          (col[3] - 1) + "): they touch none of the failing lines. The list is under " +
          "<i>folded operations</i>.";
        light(null);
      } else {
        var op = data.ops[col[2]] || {};
        html = "<b>#" + col[2] + " " + esc(op.k) + "</b>";
        if (op.m !== undefined) html += " <span class=m>" + esc(op.m) + " " + esc(op.o) + "</span> (" + op.n + " bytes)";
        if (op.v) html += "<br>value <span class=m>" + esc(op.v) + "</span>";
        if (op.w) html += "<br>" + op.w.map(esc).join("<br>&nbsp;&nbsp;called from ");
        if (op.fr) html += "<br><span class=m>" + op.fr.map(esc).join("<br>") + "</span>";
        if (op.f) html += "<br>in flight at the crash: <b>" + esc(op.f) + "</b> in the failing image";
        light(op.s);
      }
      if (row) {
        html += "<br>line <span class=m>" + esc(row[2]) + "</span>";
        var cls = ev.target.getAttribute && ev.target.getAttribute("class");
        if (cls && STATE[cls]) html += ": " + STATE[cls];
      }
      showTip(html, ev);
    });
    body.addEventListener("mouseleave", function () {
      hideTip();
      hl.setAttribute("width", 0);
      light(null);
    });
    body.addEventListener("click", function (ev) {
      var p = point(ev);
      var col = p && find(data.cols, p.x);
      if (!col) return;
      if (col[3] - col[2] > 1) {
        var folds = tl.querySelector("details.folds");
        if (folds) { folds.open = true; folds.scrollIntoView({block: "nearest"}); }
        return;
      }
      var op = data.ops[col[2]];
      var el = op && op.s && document.getElementById(op.s);
      if (el) el.scrollIntoView({block: "nearest"});
    });
    // A source line lights up the operations it issued.
    var marks = [];
    tl.querySelectorAll("li[data-src]").forEach(function (li) {
      li.addEventListener("mouseenter", function () {
        var want = li.getAttribute("data-src");
        data.cols.forEach(function (c) {
          var op = data.ops[c[2]];
          if (c[3] - c[2] === 1 && op && op.s === want) {
            var r = document.createElementNS(NS, "rect");
            r.setAttribute("class", "hl");
            r.setAttribute("x", c[0]); r.setAttribute("width", c[1]);
            r.setAttribute("y", 0); r.setAttribute("height", body.viewBox.baseVal.height);
            body.appendChild(r);
            marks.push(r);
          }
        });
      });
      li.addEventListener("mouseleave", function () {
        marks.forEach(function (r) { r.remove(); });
        marks = [];
      });
    });
  });

  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var text = b.getAttribute("data-copy");
      var done = function () { b.textContent = "copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var t = document.createElement("textarea");
        t.value = text; document.body.appendChild(t); t.select();
        try { document.execCommand("copy"); done(); } catch (e) { /* not allowed here */ }
        t.remove();
      }
    });
  });
  document.querySelectorAll("button[data-open]").forEach(function (b) {
    b.addEventListener("click", function () {
      var open = b.getAttribute("data-open") === "1";
      document.querySelectorAll("details.failure, details.check").forEach(function (d) { d.open = open; });
    });
  });
  root.setAttribute("data-ready", "1");
})();
"""
