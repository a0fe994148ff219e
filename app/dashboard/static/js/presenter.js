// Presenter mode: the page made for a projector. The F key or `?presenter=1` in the URL turns it
// on (F again, or `?presenter=0`, off). It is a body class, `presenter`, styled by
// css/presenter.css: no toolbar, large type, the map and the convergence chart on one screen
// without scrolling (1280×720 up), the selected POP's siblings large. Plotly draws its own text,
// so the map's labels and the chart's fonts are set again when the mode flips (onChange).
//
// The mode lives on <body> and in the URL (history.replaceState), never in what the stream
// rebuilds: a reconnect, a restarted server or a reset keeps it, and so does a reload.

export const PRESENTER_CLASS = "presenter";
export const PRESENTER_KEY = "f";

export function isPresenting() {
  return document.body.classList.contains(PRESENTER_CLASS);
}

function fromUrl() {
  const v = new URLSearchParams(location.search).get("presenter");
  return v === "1" || v === "true" || v === "on";
}

function toUrl(on) {
  const url = new URL(location.href);
  if (on) url.searchParams.set("presenter", "1");
  else url.searchParams.delete("presenter");
  history.replaceState(history.state, "", url);
}

// onChange(on): redraw what Plotly sized (map labels, chart fonts and size)
export function initPresenter({ keys, onChange }) {
  const apply = (on) => {
    document.body.classList.toggle(PRESENTER_CLASS, on);
    onChange(on);
  };
  if (fromUrl()) document.body.classList.add(PRESENTER_CLASS);
  keys.bind(PRESENTER_KEY, "presenter mode: large type, no toolbar (F again leaves it)", () => {
    const on = !isPresenting();
    toUrl(on);
    apply(on);
  });
}
