// The zpydb console: browse the tree, edit it, undo/redo, history, the tree as it was at
// a change (?at=ID, read-only), and live updates (an EventSource on the shown path).
// It only calls the REST API of the server that served it (same origin), reads one level
// at a time (?shallow=values), and puts every key and value on the page as text
// (textContent, never HTML): data is never markup. No library, no build step.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const TAGS = new Set(["$bytes", "$tuple", "$int", "$file"]);
  const state = {
    token: sessionStorage.getItem("zpydb-token") || "",
    start: "/",
    expanded: new Set(["/"]),
    pending: 0,
    at: null,          // the history entry being viewed (read-only), or null: now
    source: null,      // the EventSource of the live updates
    refreshing: null,  // the refresh in progress (a promise), and whether another is due
    again: false,
    stale: false,      // a change arrived during an edit: refresh when it ends
  };

  // ---- locations --------------------------------------------------------------------------
  // A path is "/" or "/seg/seg" with each segment already URL-encoded (rest.py's rules).
  function segmentOfKey(key) {
    if (typeof key === "string" && key !== "" && !key.startsWith(".") && !key.startsWith("~")) {
      return encodeURIComponent(key);
    }
    return "~" + encodeURIComponent(JSON.stringify(key)); // ints, bytes, tuples, "", ".x", "~x"
  }
  function childPath(path, segment) { return (path === "/" ? "" : path) + "/" + segment; }
  function jsonUrl(path, query) { return (path === "/" ? "/" : path) + ".json" + (query ? "?" + query : ""); }
  function readQuery(query) {
    // A read of what is shown: the past while a history entry is being viewed.
    if (!state.at) return query;
    const at = "at=" + encodeURIComponent(state.at.id);
    return query ? query + "&" + at : at;
  }
  function decodedPath(path) {
    try { return decodeURIComponent(path); } catch (e) { return path; }
  }

  // ---- talking to the server --------------------------------------------------------------
  async function call(method, url, body) {
    const headers = {};
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    const options = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = body;
    }
    busy(+1);
    try {
      const response = await fetch(url, options);
      const text = await response.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
      if (!response.ok) {
        let message = (data && data.error) || (method + " " + url + ": HTTP " + response.status);
        if (response.status === 401) message += " (enter a token above)";
        if (response.status === 412) message = "the data changed meanwhile (412); refreshed";
        throw new Error(message);
      }
      return data;
    } finally {
      busy(-1);
    }
  }
  function busy(delta) {
    state.pending += delta;
    document.body.dataset.pending = String(state.pending);
  }
  function say(message, isError) {
    const status = $("status");
    status.textContent = message;
    status.className = isError ? "error" : "";
  }
  async function attempt(what) {
    try {
      return await what();
    } catch (error) {
      say(error.message, true);
      return undefined;
    }
  }

  // ---- what a listing entry is ----------------------------------------------------------------
  function describe(doc) {
    // A child in a ?shallow=values listing, or the value at the start path.
    if (doc !== null && typeof doc === "object" && !Array.isArray(doc)) {
      const keys = Object.keys(doc);
      if (keys.length === 1 && keys[0] === "$shallow") {
        return { kind: doc.$shallow.type, size: doc.$shallow.size };
      }
      if (keys.length === 1 && keys[0] === "$file") return { kind: "file", value: doc };
      if (keys.length === 1 && TAGS.has(keys[0])) return { kind: "scalar", value: doc };
      return { kind: "dict" };
    }
    if (Array.isArray(doc)) return { kind: "list", size: doc.length };
    return { kind: "scalar", value: doc };
  }
  function children(listing) {
    // [{key, typed, segment}, doc] pairs of a dict or list listing
    if (Array.isArray(listing)) {
      return listing.map((doc, index) => [{ label: String(index), typed: false, segment: String(index) }, doc]);
    }
    const keys = Object.keys(listing);
    if (keys.length === 1 && keys[0] === "$dict" && Array.isArray(listing.$dict)) {
      return listing.$dict.map(([key, doc]) => [{
        label: typeof key === "string" ? key : JSON.stringify(key),
        typed: typeof key !== "string",
        segment: segmentOfKey(key),
      }, doc]);
    }
    return keys.map((key) => [{ label: key, typed: false, segment: segmentOfKey(key) }, listing[key]]);
  }

  // ---- drawing the tree -----------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function button(label, className, title, onClick) {
    const node = el("button", className, label);
    node.type = "button";
    node.title = title;
    node.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
    return node;
  }
  function valueClass(value) {
    if (typeof value === "string") return "value string";
    if (typeof value === "number") return "value number";
    return "value literal";
  }

  function nodeItem(path, key, info, parentKind) {
    const li = el("li", "node");
    li.dataset.path = path;
    li.dataset.kind = info.kind;
    const row = el("div", "row");
    const toggle = button(state.expanded.has(path) ? "▾" : "▸", "toggle", "expand", () => toggleNode(li));
    toggle.disabled = info.kind !== "dict" && info.kind !== "list";
    row.appendChild(toggle);
    if (key) row.appendChild(el("span", key.typed ? "key typed" : "key", key.label));
    let value;
    if (info.kind === "dict") {
      value = el("span", "value summary", "{…}");
    } else if (info.kind === "list") {
      value = el("span", "value summary", "[" + info.size + " item" + (info.size === 1 ? "" : "s") + "]");
    } else if (info.kind === "file") {
      const meta = info.value.$file;
      value = el("span", "value readonly", "file " + meta.name + " (" + meta.size + " bytes, " + meta.content_type + ")");
    } else {
      value = el("span", valueClass(info.value), JSON.stringify(info.value));
      if (!state.at) {
        value.title = "click to edit (JSON)";
        value.addEventListener("click", () => editInline(li, value, info.value));
      }
    }
    row.appendChild(value);
    if (state.at) { // the past is read-only: no edit actions at all
      li.appendChild(row);
      return li;
    }
    const actions = el("span", "actions");
    if (info.kind === "dict" || info.kind === "list") {
      actions.appendChild(button("+", "add", info.kind === "list" ? "append an item" : "add a key",
                                 () => openAdder(path, info.kind)));
    }
    if (info.kind !== "file") {
      actions.appendChild(button("JSON", "edit-json", "edit as JSON", () => openJsonEditor(path)));
    }
    if (path !== "/") {
      actions.appendChild(button("×", "delete", "delete", () => remove(path)));
    }
    row.appendChild(actions);
    li.appendChild(row);
    return li;
  }

  async function fill(li) {
    // Read one level below li's path and draw it (and the levels the user had open).
    const path = li.dataset.path;
    const listing = await call("GET", jsonUrl(path, readQuery("shallow=values")));
    let list = li.querySelector(":scope > ul");
    if (!list) {
      list = el("ul");
      li.appendChild(list);
    }
    list.replaceChildren();
    const entries = listing === null ? [] : children(listing);
    if (entries.length === 0) list.appendChild(el("li", "empty", listing === null ? "(nothing here)" : "(empty)"));
    const opening = [];
    for (const [key, doc] of entries) {
      const info = describe(doc);
      const item = nodeItem(childPath(path, key.segment), key, info, li.dataset.kind);
      list.appendChild(item);
      if (state.expanded.has(item.dataset.path) && (info.kind === "dict" || info.kind === "list")) {
        opening.push(fill(item));
      }
    }
    await Promise.all(opening);
  }

  async function toggleNode(li) {
    const path = li.dataset.path;
    const toggle = li.querySelector(":scope > .row > .toggle");
    if (state.expanded.has(path)) {
      state.expanded.delete(path);
      const list = li.querySelector(":scope > ul");
      if (list) list.remove();
      toggle.textContent = "▸";
      return;
    }
    state.expanded.add(path);
    toggle.textContent = "▾";
    await attempt(() => fill(li));
  }

  function refresh() {
    // One refresh at a time; asked for during one, it runs once more after it (live
    // updates may arrive faster than a tree is read).
    if (state.refreshing) {
      state.again = true;
      return state.refreshing;
    }
    state.refreshing = (async () => {
      do {
        state.again = false;
        state.stale = false;
        await drawTree();
        await loadHistory();
      } while (state.again);
    })().finally(() => { state.refreshing = null; });
    return state.refreshing;
  }

  async function drawTree() {
    const tree = $("tree");
    const start = state.start;
    await attempt(async () => {
      const doc = await call("GET", jsonUrl(start, readQuery("shallow=values")));
      const info = doc === null ? { kind: "scalar", value: null } : describe(doc);
      const label = { label: start === "/" ? "db" : decodedPath(start), typed: false };
      const root = nodeItem(start, label, info, null);
      tree.replaceChildren(root);
      if (info.kind === "dict" || info.kind === "list") {
        state.expanded.add(start);
        await fill(root);
      }
    });
    tree.dataset.shown = state.at ? state.at.id : "now";
  }

  // ---- editing ---------------------------------------------------------------------------------
  function editInline(li, span, current) {
    const input = el("input", "inline-edit");
    input.type = "text";
    input.value = JSON.stringify(current);
    input.spellcheck = false;
    span.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const cancel = () => { if (!done) { done = true; input.replaceWith(span); editEnded(); } };
    input.addEventListener("keydown", async (event) => {
      if (event.key === "Escape") { cancel(); return; }
      if (event.key !== "Enter") return;
      event.preventDefault();
      let text = input.value;
      try { JSON.parse(text); } catch (error) { say("not JSON (strings need quotes): " + error.message, true); return; }
      done = true;
      await write("PUT", li.dataset.path, text);
    });
    input.addEventListener("blur", cancel);
  }

  async function write(method, path, body) {
    const ok = await attempt(async () => {
      await call(method, jsonUrl(path), body);
      say(method + " " + decodedPath(jsonUrl(path)) + ": done");
      return true;
    });
    await refresh();
    return ok;
  }

  async function remove(path) {
    await write("DELETE", path);
  }

  let editorSave = null;
  function openEditor(title, text, withKey, save) {
    $("editor-title").textContent = title;
    $("editor-key-label").hidden = !withKey;
    $("editor-key").value = "";
    $("editor-text").value = text;
    $("editor-error").textContent = "";
    editorSave = save;
    $("editor").showModal();
    (withKey ? $("editor-key") : $("editor-text")).focus();
  }
  async function openJsonEditor(path) {
    if (state.at) return;
    const value = await attempt(() => call("GET", jsonUrl(path)));
    if (value === undefined) return;
    openEditor("Edit " + decodedPath(path) + " as JSON", JSON.stringify(value, null, 2), false,
               (key, text) => write("PUT", path, text));
  }
  function openAdder(path, kind) {
    if (kind === "list") {
      openEditor("Append to " + decodedPath(path), "", false, (key, text) => write("POST", path, text));
    } else {
      openEditor("Add a key to " + decodedPath(path), "", true, (key, text) => {
        const segment = key.startsWith("~") ? key : segmentOfKey(key);
        return write("PUT", childPath(path, segment), text);
      });
    }
  }
  $("editor-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("editor-text").value;
    try { JSON.parse(text); } catch (error) {
      $("editor-error").textContent = "not JSON: " + error.message;
      return;
    }
    const save = editorSave;
    $("editor").close();
    if (save) await save($("editor-key").value, text);
  });
  $("editor-cancel").addEventListener("click", () => $("editor").close());
  $("editor").addEventListener("close", () => editEnded());

  // ---- undo, redo, history ---------------------------------------------------------------------
  async function undoRedo(which) {
    await attempt(async () => {
      const answer = await call("POST", "/." + which);
      say(which === "undo" ? "undone: " + answer.undone : "redone: " + answer.redone);
    });
    await refresh();
  }
  async function loadHistory() {
    const list = $("history");
    await attempt(async () => {
      const entries = await call("GET", "/.history.json?n=50");
      list.replaceChildren();
      for (const entry of entries) {
        const item = el("li", "entry kind-" + entry.kind);
        item.dataset.id = entry.id;
        item.tabIndex = 0;
        item.title = "show the tree as it was after this change (read-only)";
        if (state.at && state.at.id === entry.id) {
          item.classList.add("selected");
          item.setAttribute("aria-current", "true");
        }
        item.appendChild(el("div", "note", entry.note));
        item.appendChild(el("div", "meta", entry.time.replace("T", " ") + " · " + (entry.user || "?") + " · " + entry.kind));
        item.addEventListener("click", () => viewAt(entry));
        item.addEventListener("keydown", (event) => { if (event.key === "Enter") viewAt(entry); });
        list.appendChild(item);
      }
      if (!entries.length) list.appendChild(el("li", "empty", "(no changes yet)"));
    });
  }

  // ---- the past ---------------------------------------------------------------------------------
  function viewAt(entry) {
    // Show the tree as it was right after ``entry`` (GET ?at=ID); editing is off meanwhile.
    state.at = entry ? { id: entry.id, time: entry.time } : null;
    document.body.dataset.viewing = state.at ? state.at.id : "now";
    $("past").hidden = !state.at;
    $("past-id").textContent = state.at ? state.at.id : "";
    $("past-time").textContent = state.at ? entry.time.replace("T", " ") : "";
    for (const id of ["undo", "redo"]) $(id).disabled = !!state.at;
    say(state.at ? "viewing the tree as it was after change " + state.at.id + " (read-only)" : "back to now");
    return refresh();
  }

  function editing() {
    return $("editor").open || document.querySelector("#tree input.inline-edit") !== null;
  }
  function editEnded() {
    if (state.stale && !editing()) {
      state.stale = false;
      refresh();
    }
  }

  // ---- live updates -------------------------------------------------------------------------------
  function listen() {
    // One EventSource on the shown path (it covers every path below it, expanded or not);
    // any put or patch means something shown may have changed: read it again. EventSource
    // reconnects by itself and resumes with Last-Event-ID, so no change is missed.
    if (state.source) state.source.close();
    const query = state.token ? "auth=" + encodeURIComponent(state.token) : "";
    const source = new EventSource(jsonUrl(state.start, query));
    state.source = source;
    const live = $("live");
    const changed = (event) => {
      if (state.source !== source) return;
      if (state.at) loadHistory(); // the past does not change; its list of changes does
      else if (editing()) state.stale = true; // not under the user's hands: after the edit
      else refresh();
      if (event.lastEventId) document.body.dataset.lastEvent = event.lastEventId;
    };
    source.addEventListener("put", changed);
    source.addEventListener("patch", changed);
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.className = "live on";
    });
    source.addEventListener("error", () => {
      if (state.source !== source) return;
      const closed = source.readyState === EventSource.CLOSED;
      live.textContent = closed ? "not live (press Refresh)" : "reconnecting…";
      live.className = "live off";
    });
  }

  // ---- start -------------------------------------------------------------------------------------
  function startFromHash() {
    const hash = window.location.hash.slice(1);
    state.start = hash && hash.startsWith("/") && hash !== "/" ? hash.replace(/\/+$/, "") : "/";
    $("location").value = decodedPath(state.start);
  }
  $("undo").addEventListener("click", () => undoRedo("undo"));
  $("redo").addEventListener("click", () => undoRedo("redo"));
  $("refresh").addEventListener("click", () => {
    if (!state.source || state.source.readyState === EventSource.CLOSED) listen();
    refresh();
  });
  $("now").addEventListener("click", () => viewAt(null));
  $("goto").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("location").value.trim() || "/";
    const segments = typed.split("/").filter((s) => s !== "");
    const path = segments.length ? "/" + segments.map((s) => s.startsWith("~") ? s : segmentOfKey(s)).join("/") : "/";
    window.location.hash = path;
  });
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("zpydb-token", state.token);
    say(state.token ? "token set for this tab" : "no token");
    listen();
    refresh();
  });
  window.addEventListener("hashchange", () => { startFromHash(); listen(); refresh(); });

  const params = new URLSearchParams(window.location.search);
  if (params.has("auth")) { // a token in the page's URL: keep it for this tab, drop it from the URL
    state.token = params.get("auth");
    sessionStorage.setItem("zpydb-token", state.token);
    window.history.replaceState(null, "", window.location.pathname + window.location.hash);
  }
  $("token").value = state.token;
  busy(0);
  startFromHash();
  document.body.dataset.viewing = "now";
  listen();
  refresh();
})();
