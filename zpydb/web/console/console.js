// The zpydb console: browse the tree, edit it, undo/redo, history.
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
      value.title = "click to edit (JSON)";
      value.addEventListener("click", () => editInline(li, value, info.value));
    }
    row.appendChild(value);
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
    const listing = await call("GET", jsonUrl(path, "shallow=values"));
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

  async function refresh() {
    const tree = $("tree");
    const start = state.start;
    await attempt(async () => {
      const doc = await call("GET", jsonUrl(start, "shallow=values"));
      const info = doc === null ? { kind: "scalar", value: null } : describe(doc);
      const label = { label: start === "/" ? "db" : decodedPath(start), typed: false };
      const root = nodeItem(start, label, info, null);
      tree.replaceChildren(root);
      if (info.kind === "dict" || info.kind === "list") {
        state.expanded.add(start);
        await fill(root);
      }
    });
    await loadHistory();
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
    const cancel = () => { if (!done) { done = true; input.replaceWith(span); } };
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
        const item = el("li", "kind-" + entry.kind);
        item.appendChild(el("div", "note", entry.note));
        item.appendChild(el("div", "meta", entry.time.replace("T", " ") + " · " + (entry.user || "?") + " · " + entry.kind));
        list.appendChild(item);
      }
      if (!entries.length) list.appendChild(el("li", "empty", "(no changes yet)"));
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
  $("refresh").addEventListener("click", () => refresh());
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
    refresh();
  });
  window.addEventListener("hashchange", () => { startFromHash(); refresh(); });

  const params = new URLSearchParams(window.location.search);
  if (params.has("auth")) { // a token in the page's URL: keep it for this tab, drop it from the URL
    state.token = params.get("auth");
    sessionStorage.setItem("zpydb-token", state.token);
    window.history.replaceState(null, "", window.location.pathname + window.location.hash);
  }
  $("token").value = state.token;
  busy(0);
  startFromHash();
  refresh();
})();
