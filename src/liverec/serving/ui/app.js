// The LiveRec dashboard: five pages over the HTTP API, with the key a person enters (kept in localStorage).
//
// Every number shown comes from an API route (nothing is computed here but formatting). A page marks
// <body data-loaded="PAGE"> once its first data is on screen: the browser tests and benchmarks/bench_dashboard.py
// wait for it. Only the overview polls (once a second, and only while it is open and the tab is visible).
import { barChart, sparkline } from "./charts.js";

const KEY_STORAGE = "liverec.apiKey";
const POLL_MS = 1000;
const SERIES_LENGTH = 60;

// -- small helpers --------------------------------------------------------------------------------------------
/** An element with attributes (on* are listeners) and children (strings become text, never HTML). */
function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const number = (v, digits = 0) =>
  Number.isFinite(v) ? v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–";

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 90) return `${seconds.toFixed(0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

const figure = (v) => (Number.isInteger(v) ? number(v) : number(v, 4));
const when = (unixSeconds) => (Number.isFinite(unixSeconds) ? new Date(unixSeconds * 1000).toLocaleString() : "–");
const enc = encodeURIComponent;

function markLoaded(page) {
  // only the page on screen: a page left while its first request was in flight finishes into detached nodes,
  // and must not claim the body (a late "overview" would hide that "evaluation" has loaded)
  if (document.getElementById("page").dataset.page === page) document.body.dataset.loaded = page;
}

// -- the API --------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, detail) {
    super(status === 401 ? `${detail} — enter a key above` : status === 403 ? `Refused (403): ${detail}` : `${status}: ${detail}`);
    this.status = status;
  }
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : text || response.statusText;
    if (Array.isArray(detail)) detail = detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

const titles = new Map(); // item id -> title (or null): one GET per item, remembered
async function titleOf(itemId) {
  if (!titles.has(itemId)) {
    titles.set(
      itemId,
      api("GET", `/v1/items/${enc(itemId)}`).then(
        (item) => item.title,
        () => null,
      ),
    );
  }
  return titles.get(itemId);
}

function itemLabel(itemId, title) {
  return h("span", {}, title ? h("span", {}, title, " ") : null, h("span", { class: title ? "muted mono" : "mono" }, itemId));
}

function showNotice(text, kind = "error") {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = `notice ${kind === "info" ? "info" : ""}`;
  box.hidden = !text;
}

function message(text, ok = false) {
  return h("div", { class: `message ${ok ? "ok" : "error"}`, role: ok ? "status" : "alert" }, text);
}

// -- pages ----------------------------------------------------------------------------------------------------
// Each page renders into <main> and returns a function that stops whatever it started.

function overviewPage(main) {
  const series = { events: [], recommendations: [], p99: [] };
  const cards = h("div", { class: "cards", id: "stats" });
  const status = h("p", { class: "muted" }, "Polling GET /v1/stats once a second.");
  const minute = h("div", { class: "grid two", id: "last-minute" });
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Overview"), status), cards, minute);
  let timer = null;
  let stopped = false;

  function card(id, label, value, sub, values, color) {
    return h(
      "div",
      { class: "card", id: `stat-${id}` },
      h("div", { class: "label" }, label),
      h("div", { class: "value" }, value),
      sub ? h("div", { class: "sub" }, sub) : null,
      values ? sparkline(values, { color }) : null,
    );
  }

  function draw(s) {
    for (const [name, value] of [["events", s.events_per_s], ["recommendations", s.recommendations_per_s], ["p99", s.recommendation_p99_ms]]) {
      series[name].push(value);
      if (series[name].length > SERIES_LENGTH) series[name].shift();
    }
    const span = s.window_s ? `over the last ${s.window_s.toFixed(1)} s` : "measuring…";
    cards.replaceChildren(
      card("events", "Events / s", number(s.events_per_s, 1), span, series.events, "#2f6fde"),
      card("recommendations", "Recommendations / s", number(s.recommendations_per_s, 1), span, series.recommendations, "#1b8a4b"),
      card("p99", "Recommendation p99", s.recommendation_p99_ms === null ? "–" : `${number(s.recommendation_p99_ms, 1)} ms`,
        s.recommendation_p99_ms === null ? "no recommendation in the window" : span, series.p99, "#c0392b"),
      card("model", "Served model", s.model_version || "none", `retrieval: ${s.retrieval}`),
      card("freshness", "Freshness", duration(s.model_age_s), "since the served version was registered"),
      card("lag", "Updater lag", s.updater_lag_events === null ? "–" : `${number(s.updater_lag_events)} events`,
        "in the log after what the served version learned"),
      card("log", "Events in the log", number(s.events_in_log), `newest offset ${number(s.log_offset)}; ${number(s.state_lag_events)} not applied`),
      card("users", "Users", number(s.users)),
      card("items", "Items", number(s.items)),
    );
    const big = (title, values, color, unit) => {
      const finite = values.filter(Number.isFinite);
      const range = finite.length ? `${number(Math.min(...finite), 1)}–${number(Math.max(...finite), 1)} ${unit}` : "no reading yet";
      return h("div", { class: "panel" }, h("h2", {}, title, h("span", { class: "muted" }, `  last ${values.length} readings: ${range}`)), sparkline(values, { color, height: 120 }));
    };
    minute.replaceChildren(
      big("Events / s", series.events, "#2f6fde", "/s"),
      big("Recommendations / s", series.recommendations, "#1b8a4b", "/s"),
    );
    status.textContent = `Polling GET /v1/stats once a second · last reading ${new Date().toLocaleTimeString()}`;
    markLoaded("overview");
  }

  async function poll() {
    if (stopped) return;
    if (!document.hidden) {
      try {
        draw(await api("GET", "/v1/stats"));
        showNotice("");
      } catch (error) {
        showNotice(error.message);
      }
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The gate's decision as the manifest keeps it (online updates): the numbers it compared and the outcome. */
function gateLine(gate) {
  if (!gate || !Number.isFinite(gate.candidate_ndcg)) return null;
  const verdict = gate.promoted ? "promoted" : "rejected";
  return h("div", { class: "gate" }, `gate: NDCG@10 ${gate.candidate_ndcg.toFixed(4)} vs serving ${number(gate.serving_ndcg, 4)} on ${number(gate.events)} events → ${verdict}`);
}

function modelsPage(main) {
  const feedback = h("div", { id: "models-feedback" });
  const table = h("div", { id: "models-table" }, h("p", { class: "empty" }, "Loading…"));
  const rollback = h("button", { id: "rollback", class: "secondary", onclick: () => act("POST", "/v1/models/rollback", "Rolled back") }, "Roll back");
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Models"), h("span", { class: "muted" }, "Registry versions; promoting and rolling back need an admin key.")),
    h("div", { class: "panel" }, h("div", { class: "row" }, rollback, h("span", { class: "muted" }, "serve the version served before the current one")), feedback),
    h("div", { class: "panel" }, table),
  );

  async function act(method, path, done) {
    feedback.replaceChildren();
    try {
      const answer = await api(method, path);
      feedback.replaceChildren(message(`${done}: now serving ${answer.serving}`, true));
    } catch (error) {
      feedback.replaceChildren(message(error.message));
    }
    await load();
  }

  async function load() {
    let data;
    try {
      data = await api("GET", "/v1/models");
    } catch (error) {
      table.replaceChildren(message(error.message));
      return;
    }
    const versions = [...data.versions].sort((a, b) => b.version.localeCompare(a.version));
    const rows = versions.map((m) => {
      const metrics = m.metrics || {};
      const training = m.training || {};
      const serving = m.version === data.serving;
      return h(
        "tr",
        { class: serving ? "serving" : null, dataset: { version: m.version } },
        h("td", {}, h("strong", {}, m.version), serving ? h("div", { class: "muted" }, "serving") : null),
        h("td", {}, m.model),
        h("td", {}, h("span", { class: `badge ${m.status}` }, m.status)),
        h("td", { class: "num" }, number(metrics["ndcg@10"], 4)),
        h("td", { class: "num" }, number(metrics["hr@10"], 4)),
        h("td", {}, m.parent || "–", h("div", { class: "muted" }, training.kind || "")),
        h("td", { class: "num" }, number(training.n_events), h("div", { class: "muted" }, training.last_offset !== undefined ? `to offset ${number(training.last_offset)}` : "")),
        h("td", {}, when(m.created_at)),
        h("td", { class: "reason" }, m.reason || "–", gateLine(m.gate)),
        h("td", {}, serving ? null : h("button", { class: "small", dataset: { promote: m.version }, onclick: () => act("POST", `/v1/models/${enc(m.version)}/promote`, `Promoted ${m.version}`) }, "Promote")),
      );
    });
    table.replaceChildren(
      h("h2", {}, `${versions.length} version(s); serving ${data.serving || "none"}`),
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ["version", "model", "status"].map((t) => h("th", {}, t)), h("th", { class: "num" }, "NDCG@10"), h("th", { class: "num" }, "HR@10"),
          h("th", {}, "parent"), h("th", { class: "num" }, "events learned"), h("th", {}, "registered"), h("th", {}, "gate decision / reason"), h("th", {}, ""))),
        h("tbody", {}, rows),
      ),
    );
    markLoaded("models");
  }
  load();
  return () => {};
}

function userPage(main, argument) {
  const search = h("input", { type: "search", id: "user-search", placeholder: "user id starts with…" });
  const results = h("ul", { class: "list", id: "user-results" });
  const detail = h("div", { id: "user-detail" }, h("p", { class: "empty" }, "Pick a user, or start an anonymous session."));
  const anonymous = h("button", { id: "anonymous", class: "secondary", onclick: () => select(`session-${crypto.randomUUID().slice(0, 12)}`, true) }, "Anonymous session");
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "User"), h("span", { class: "muted" }, "History, recommendations with their explanations, and live feedback.")),
    h(
      "div",
      { class: "grid side" },
      h("div", { class: "panel" }, h("h2", {}, "Find a user"), h("div", { class: "row" }, search), h("div", { class: "row", style: "margin:10px 0" }, anonymous), results),
      detail,
    ),
  );
  let current = null; // {userId, anonymous, items: [ids], recommendationId, generation}
  let searchTimer = null;

  async function find() {
    try {
      const found = await api("GET", `/v1/users?q=${enc(search.value.trim())}&limit=20`);
      results.replaceChildren(
        ...found.user_ids.map((id) =>
          h("li", {}, h("button", { class: `pick mono${current && current.userId === id ? " selected" : ""}`, dataset: { user: id }, onclick: () => select(id, false) }, id)),
        ),
      );
      if (!found.user_ids.length) results.replaceChildren(h("li", { class: "empty" }, found.pseudonymised ? "No user with exactly this id (ids are pseudonymised)." : "No user id starts with this."));
    } catch (error) {
      results.replaceChildren(h("li", {}, message(error.message)));
    }
    markLoaded("user");
  }
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(find, 200);
  });

  async function select(userId, isAnonymous) {
    current = { userId, anonymous: isAnonymous, items: null, recommendationId: null, generation: 0 };
    for (const button of results.querySelectorAll(".pick")) button.classList.toggle("selected", button.dataset.user === userId);
    window.history.replaceState(null, "", `#user/${enc(userId)}`);
    const recs = h("ul", { class: "list recs", id: "recs" });
    const history = h("ul", { class: "list", id: "history" });
    const banner = h("div", { id: "changed" });
    detail.replaceChildren(
      h(
        "div",
        { class: "panel" },
        h("h2", {}, isAnonymous ? "Anonymous session " : "User ", h("span", { class: "mono", id: "user-id" }, userId)),
        isAnonymous ? h("p", { class: "muted" }, "A new id the engine has never seen: it gets the popular items until its first click.") : null,
      ),
      h("div", { class: "grid two" }, h("div", { class: "panel" }, h("h2", {}, "Recommendations"), banner, recs), h("div", { class: "panel" }, h("h2", {}, "Recent history (newest first)"), history)),
    );
    await refresh(recs, history, banner);
  }

  async function refresh(recs, history, banner) {
    const state = current;
    const previous = state.items;
    let answer;
    try {
      answer = await api("GET", `/v1/users/${enc(state.userId)}/recommendations?k=10&explain=true`);
    } catch (error) {
      recs.replaceChildren(h("li", {}, message(error.message)));
      return;
    }
    const ids = answer.items.map((item) => item.item_id);
    const names = await Promise.all(ids.map(titleOf));
    state.items = ids;
    state.recommendationId = answer.recommendation_id;
    state.generation += 1;
    recs.dataset.generation = String(state.generation);
    recs.dataset.items = ids.join(",");
    recs.replaceChildren(
      ...answer.items.map((item, n) => {
        const isNew = previous !== null && !previous.includes(item.item_id);
        const why = item.explanation ? item.explanation.text || item.explanation.kind : null;
        return h(
          "li",
          { class: isNew ? "changed" : null, dataset: { item: item.item_id } },
          h("span", { class: "rank" }, `${n + 1}.`),
          h("div", {}, itemLabel(item.item_id, names[n]), isNew ? h("span", { class: "badge new" }, " new") : null, why ? h("div", { class: "why" }, why) : null),
          h(
            "span",
            { class: "actions" },
            h("button", { class: "small secondary", dataset: { action: "click" }, onclick: () => send(item.item_id, "click", recs, history, banner) }, "Click"),
            h("button", { class: "small", dataset: { action: "purchase" }, onclick: () => send(item.item_id, "purchase", recs, history, banner) }, "Purchase"),
          ),
        );
      }),
    );
    if (!answer.items.length) recs.replaceChildren(h("li", { class: "empty" }, "Nothing to recommend."));
    const note = answer.fallback ? `Served by ${answer.fallback}: ${answer.reason}` : `Ranked by ${answer.model_version} from ${answer.history_length} recent event(s).`;
    if (previous === null) banner.replaceChildren(h("p", { class: "muted" }, note));
    else {
      const added = ids.filter((id) => !previous.includes(id)).length;
      const moved = ids.filter((id, n) => previous.includes(id) && previous[n] !== id).length;
      banner.replaceChildren(
        h("div", { class: "changed-banner", role: "status" }, added || moved ? `The list changed: ${added} new item(s), ${moved} moved.` : "The list did not change."),
        h("p", { class: "muted" }, note),
      );
    }
    await loadHistory(history);
  }

  async function loadHistory(history) {
    let recent = [];
    try {
      recent = (await api("GET", `/v1/users/${enc(current.userId)}`)).recent_items;
    } catch (error) {
      if (error.status !== 404) {
        history.replaceChildren(h("li", {}, message(error.message)));
        return;
      }
    }
    const shown = recent.slice(-20).reverse();
    const names = await Promise.all(shown.map(titleOf));
    history.replaceChildren(...shown.map((id, n) => h("li", { dataset: { item: id } }, itemLabel(id, names[n]))));
    if (!shown.length) history.replaceChildren(h("li", { class: "empty" }, "No events yet."));
  }

  async function send(itemId, type, recs, history, banner) {
    const event = { user_id: current.userId, item_id: itemId, type };
    if (current.recommendationId) event.recommendation_id = current.recommendationId;
    try {
      await api("POST", "/v1/events", [event]);
    } catch (error) {
      banner.replaceChildren(message(error.message));
      return;
    }
    await refresh(recs, history, banner);
  }

  find();
  if (argument) select(decodeURIComponent(argument), argument.startsWith("session-"));
  return () => clearTimeout(searchTimer);
}

function itemsPage(main, argument) {
  const search = h("input", { type: "search", id: "item-search", placeholder: "id or title contains…" });
  const results = h("ul", { class: "list", id: "item-results" });
  const detail = h("div", { id: "item-detail" }, h("p", { class: "empty" }, "Pick an item to see it and its similar items."));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Items"), h("span", { class: "muted" }, "Catalogue search (empty: the most popular now), similar items, availability.")),
    h("div", { class: "grid side" }, h("div", { class: "panel" }, h("h2", {}, "Catalogue"), h("div", { class: "row" }, search), results), detail),
  );
  let searchTimer = null;

  async function find() {
    try {
      const found = await api("GET", `/v1/items?q=${enc(search.value.trim())}&limit=20`);
      results.replaceChildren(
        ...found.items.map((item) =>
          h("li", {}, h("button", { class: "pick", dataset: { item: item.item_id }, onclick: () => select(item.item_id) }, itemLabel(item.item_id, item.title), item.available ? null : h("span", { class: "badge off" }, "unavailable"))),
        ),
      );
      if (!found.items.length) results.replaceChildren(h("li", { class: "empty" }, "No item matches."));
    } catch (error) {
      results.replaceChildren(h("li", {}, message(error.message)));
    }
    markLoaded("items");
  }
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(find, 200);
  });

  async function select(itemId) {
    for (const button of results.querySelectorAll(".pick")) button.classList.toggle("selected", button.dataset.item === itemId);
    window.history.replaceState(null, "", `#items/${enc(itemId)}`);
    const feedback = h("div", { id: "item-feedback" });
    let item;
    try {
      item = await api("GET", `/v1/items/${enc(itemId)}`);
    } catch (error) {
      detail.replaceChildren(h("div", { class: "panel" }, message(error.message)));
      return;
    }
    titles.set(itemId, Promise.resolve(item.title));
    const toggle = h("button", { id: "availability", class: "secondary", onclick: () => flip(item, feedback) }, item.available ? "Make unavailable" : "Make available");
    const similar = h("ul", { class: "list", id: "similar" }, h("li", { class: "empty" }, "Loading…"));
    detail.replaceChildren(
      h(
        "div",
        { class: "panel" },
        h("h2", {}, item.title || item.item_id),
        h(
          "table",
          {},
          h("tbody", {},
            h("tr", {}, h("th", {}, "id"), h("td", { class: "mono" }, item.item_id)),
            h("tr", {}, h("th", {}, "categories"), h("td", {}, item.categories.join(", ") || "–")),
            h("tr", {}, h("th", {}, "available"), h("td", {}, h("span", { class: `badge ${item.available ? "promoted" : "off"}`, id: "available" }, item.available ? "yes" : "no"))),
            h("tr", {}, h("th", {}, "events (weighted)"), h("td", {}, number(item.stats && item.stats.count))),
            h("tr", {}, h("th", {}, "popularity"), h("td", {}, number(item.stats && item.stats.popularity, 2))),
          ),
        ),
        h("div", { class: "row", style: "margin-top:10px" }, toggle, h("span", { class: "muted" }, "needs a catalog key")),
        feedback,
      ),
      h("div", { class: "panel" }, h("h2", {}, "Similar items"), similar),
    );
    try {
      const answer = await api("GET", `/v1/items/${enc(itemId)}/similar?k=10`);
      const names = await Promise.all(answer.items.map((s) => titleOf(s.item_id)));
      similar.replaceChildren(
        ...answer.items.map((s, n) =>
          h("li", {}, h("button", { class: "pick", onclick: () => select(s.item_id) }, itemLabel(s.item_id, names[n]), h("span", { class: "muted" }, s.score === null ? "" : `  score ${s.score.toFixed(3)}`))),
        ),
      );
      if (!answer.items.length) similar.replaceChildren(h("li", { class: "empty" }, "No similar item."));
    } catch (error) {
      similar.replaceChildren(h("li", {}, message(error.message)));
    }
  }

  async function flip(item, feedback) {
    const body = { title: item.title, categories: item.categories, available: !item.available, attributes: item.attributes ?? null };
    try {
      await api("PUT", `/v1/items/${enc(item.item_id)}`, body);
    } catch (error) {
      feedback.replaceChildren(message(error.message));
      return;
    }
    await select(item.item_id);
    document.getElementById("item-feedback").replaceChildren(message(`${item.item_id} is now ${body.available ? "available" : "unavailable"}.`, true));
    find();
  }

  find();
  if (argument) select(decodeURIComponent(argument));
  return () => clearTimeout(searchTimer);
}

function evaluationPage(main) {
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Evaluation"), h("span", { class: "muted" }, "The figures stored with each registered version.")),
    body,
  );
  (async () => {
    let data;
    try {
      data = await api("GET", "/v1/models");
    } catch (error) {
      body.replaceChildren(message(error.message));
      return;
    }
    const versions = [...data.versions].sort((a, b) => a.version.localeCompare(b.version));
    const names = [...new Set(versions.flatMap((m) => Object.keys(m.metrics || {}).filter((k) => Number.isFinite(m.metrics[k]))))].sort();
    const chartNames = ["ndcg@10", "hr@10"].filter((n) => names.includes(n));
    const colors = ["#2f6fde", "#1b8a4b"];
    const withMetrics = versions.filter((m) => chartNames.some((n) => Number.isFinite((m.metrics || {})[n])));
    const chart = withMetrics.length
      ? h(
          "div",
          { class: "panel", id: "evaluation-chart" },
          h("h2", {}, "Held-out ranking quality by version"),
          barChart(withMetrics.map((m) => m.version), chartNames.map((n, i) => ({ name: n, color: colors[i], values: withMetrics.map((m) => m.metrics[n]) }))),
          h("div", { class: "chart-legend" }, chartNames.map((n, i) => h("span", { style: `--c:${colors[i]}` }, n))),
        )
      : null;
    const table = h(
      "table",
      { id: "evaluation-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "version"), h("th", {}, "status"), names.map((n) => h("th", { class: "num" }, n)))),
      h("tbody", {}, versions.map((m) =>
        h("tr", { class: m.version === data.serving ? "serving" : null }, h("td", {}, m.version, m.version === data.serving ? h("span", { class: "muted" }, " (serving)") : null),
          h("td", {}, h("span", { class: `badge ${m.status}` }, m.status)), names.map((n) => h("td", { class: "num" }, figure((m.metrics || {})[n])))),
      )),
    );
    body.replaceChildren(
      chart || h("div", { class: "panel" }, h("p", { class: "empty" }, "No version carries held-out metrics yet.")),
      h("div", { class: "panel" }, h("h2", {}, "Every stored figure"), names.length ? table : h("p", { class: "empty" }, "No figures stored."),
        h("p", { class: "muted", style: "margin-top:10px" }, "A trained version stores its held-out numbers when registered; an online update carries the gate's prequential numbers in its reason (Models page).")),
    );
    markLoaded("evaluation");
  })();
  return () => {};
}

// -- the frame: key, navigation -------------------------------------------------------------------------------
const PAGES = { overview: overviewPage, models: modelsPage, user: userPage, items: itemsPage, evaluation: evaluationPage };
let stopPage = () => {};

function route() {
  const hash = location.hash.replace(/^#/, "");
  const [name, ...rest] = hash.split("/");
  const page = PAGES[name] ? name : "overview";
  stopPage();
  delete document.body.dataset.loaded;
  showNotice("");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === page);
  const main = document.getElementById("page");
  main.replaceChildren();
  main.dataset.page = page;
  stopPage = PAGES[page](main, rest.join("/") || null) || (() => {});
}

async function checkKey() {
  const status = document.getElementById("key-status");
  try {
    await api("GET", "/v1/stats");
    status.textContent = apiKey() ? "key accepted" : "no key needed";
  } catch (error) {
    status.textContent = error.status === 401 ? (apiKey() ? "key refused" : "key needed") : "";
  }
}

function start() {
  // a key handed over in the address (liverec demo prints one: /ui/#key=...) is kept and taken out of it
  const handed = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (handed) {
    localStorage.setItem(KEY_STORAGE, decodeURIComponent(handed[1]));
    window.history.replaceState(null, "", `${location.pathname}#overview`);
  }
  const input = document.getElementById("key-input");
  input.value = apiKey();
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORAGE, input.value.trim());
    titles.clear();
    checkKey();
    route();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    input.value = "";
    titles.clear();
    checkKey();
    route();
  });
  window.addEventListener("hashchange", route);
  checkKey();
  route();
}

start();
