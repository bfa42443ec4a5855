// Under every Plotly figure, a small bar: save the figure as PNG or SVG, or the numbers drawn in it as CSV or JSON.
// The numbers are the figure's own traces (what the browser drew), so they are the values the model produced.
(() => {
  const PLOTLY_URL = "__PLOTLY_URL__";  // plotly.js from the plotly package, loaded on the first image export
  let plotly = null;
  const loadPlotly = () => plotly ??= new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), {src: PLOTLY_URL});
    script.onload = () => resolve(window.Plotly);
    script.onerror = reject;
    document.head.appendChild(script);
  });

  const title = (gd) => {
    const t = gd.layout?.title;
    const text = typeof t === "string" ? t : t?.text || "figure";
    return text.replace(/<[^>]*>/g, " ").replace(/[^\w\- ]+/g, "").trim().slice(0, 60).replace(/ +/g, "_") || "figure";
  };
  const save = (blob, filename) => {
    const a = Object.assign(document.createElement("a"), {href: URL.createObjectURL(blob), download: filename});
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  };
  const plain = (v) => ArrayBuffer.isView(v) ? Array.from(v) : Array.isArray(v) ? v.map(plain) : v;
  const FIELDS = ["type", "name", "x", "y", "z", "text"];
  // _fullData holds the decoded arrays (plotly.py sends numpy arrays base64-encoded)
  const traces = (gd) => (gd._fullData || gd.data).map((t) =>
    Object.fromEntries(FIELDS.filter((f) => t[f] !== undefined && t[f] !== "").map((f) => [f, plain(t[f])])));

  const toCSV = (gd) => {
    const cell = (v) => {
      const s = v === null || v === undefined ? "" : String(v);
      return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const rows = [];
    traces(gd).forEach((t, i) => {
      rows.push([`trace ${i}`, t.type || "", t.name || ""]);
      if (Array.isArray(t.z) && Array.isArray(t.z[0])) {
        rows.push(["", ...(t.x || t.z[0].map((_, j) => j))]);
        t.z.forEach((row, k) => rows.push([t.y ? t.y[k] : k, ...row]));
      } else {
        const n = Math.max(t.x?.length || 0, t.y?.length || 0);
        rows.push(["x", "y", "text"]);
        for (let k = 0; k < n; k++) rows.push([t.x?.[k], t.y?.[k], Array.isArray(t.text) ? t.text[k] : ""]);
      }
    });
    return rows.map((r) => r.map(cell).join(",")).join("\n") + "\n";
  };

  const exporters = {
    PNG: async (gd) => image(gd, "png"),
    SVG: async (gd) => image(gd, "svg"),
    CSV: async (gd) => save(new Blob([toCSV(gd)], {type: "text/csv"}), title(gd) + ".csv"),
    JSON: async (gd) => save(new Blob([JSON.stringify({title: title(gd), traces: traces(gd)}, null, 1)],
                                      {type: "application/json"}), title(gd) + ".json"),
  };
  async function image(gd, format) {
    const Plotly = await loadPlotly();
    const size = {width: gd._fullLayout?.width || 900, height: gd._fullLayout?.height || 450};
    const url = await Plotly.toImage({data: gd.data, layout: gd.layout}, {format, ...size});
    save(await (await fetch(url)).blob(), `${title(gd)}.${format}`);
  }

  function addBars() {
    document.querySelectorAll(".export-bar").forEach((bar) => { if (!bar.gd.isConnected) bar.remove(); });
    document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
      if (gd.exportBar?.isConnected) return;
      const bar = Object.assign(document.createElement("div"), {className: "export-bar", gd});
      bar.append("Save: ");
      for (const [label, run] of Object.entries(exporters)) {
        const button = Object.assign(document.createElement("button"), {textContent: label, type: "button"});
        button.title = label === "PNG" || label === "SVG" ? `the figure as ${label}` : `the numbers drawn, as ${label}`;
        button.onclick = () => run(gd).catch((e) => console.warn("export failed", e));
        bar.append(button);
      }
      gd.exportBar = bar;
      gd.insertAdjacentElement("afterend", bar);
    });
  }
  // Links into other tabs: a stage of the model (an <a data-view>) or a cell or bar of a figure whose customdata is a
  // query string "?tab=..." opens that view, keeping lecture mode as it is on screen.
  // In the page, not by reloading it: the address changes (so Back returns, and a copied link is this view), then the
  // page's hidden "open-view" button applies it as it applies a link at load (explainers/page/views.py).
  const apply = () => document.querySelector("#open-view")?.click();
  const open = (query) => {
    const lecture = document.body.classList.contains("lecture") ? "1" : "0";
    const search = query + "&lecture=" + lecture;
    if (!document.querySelector("#open-view")) { window.location.search = search; return; }
    window.history.pushState(null, "", window.location.pathname + search);
    apply();
  };
  window.addEventListener("popstate", apply);
  const follow = (event) => {
    const query = event?.points?.[0]?.customdata;
    if (typeof query === "string" && query.startsWith("?tab=")) open(query);
  };
  document.addEventListener("click", (event) => {
    const link = event.target.closest?.("a[data-view]");
    if (link && !event.ctrlKey && !event.metaKey && !event.shiftKey && event.button === 0) {
      event.preventDefault();
      open(link.getAttribute("href"));
    }
  });
  function addLinks() {
    document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
      if (!gd.on) return;
      gd.removeListener?.("plotly_click", follow);  // a redrawn figure keeps its listeners: never add one twice
      gd.on("plotly_click", follow);
    });
  }

  // Lesson mode (explainers/page/lessons.py): the arrow keys press the lesson's Back / Next, unless one is typing, moving a
  // slider or choosing among tabs (their own arrow keys), or no lesson runs (the buttons are hidden or disabled).
  const LESSON_KEYS = {ArrowRight: "lesson-next", ArrowLeft: "lesson-back"};
  const OWN_ARROWS = "input, textarea, select, [contenteditable=''], [contenteditable=true], [role=tablist], " +
                     "[role=slider], [role=listbox], .js-plotly-plot";
  document.addEventListener("keydown", (event) => {
    const id = LESSON_KEYS[event.key];
    if (!id || event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (event.target.closest?.(OWN_ARROWS)) return;
    const button = document.getElementById(id);
    if (!button || button.disabled || !button.offsetParent) return;
    event.preventDefault();
    button.click();
  });

  // Sliders (Gradio's own): their figures redraw on "release", which Gradio sends when the handle is let go or the number
  // box loses focus. Enter in the number box and the arrow keys on the handle send it too, so the figure never shows
  // a value other than the one on screen.
  const SLIDER_KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"]);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target.matches?.("input[type=number]") &&
        event.target.closest(".block")?.querySelector("input[type=range]")) event.target.blur();
  });
  document.addEventListener("keyup", (event) => {
    if (SLIDER_KEYS.has(event.key) && event.target.matches?.("input[type=range]")) {
      event.target.dispatchEvent(new PointerEvent("pointerup", {bubbles: true}));
    }
  });

  let queued = false;
  new MutationObserver(() => {
    if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; addBars(); addLinks(); }); }
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
