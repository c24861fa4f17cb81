// forgelab web view. Everything shown here was written by whoever sent the mail, so
// the DOM is built with textContent and attributes only: never innerHTML.
"use strict";

(function () {
  const body = document.body;
  const page = body.dataset.page;
  const $ = (id) => document.getElementById(id);

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clock(ts) {
    if (!ts) return "";
    const d = new Date(ts * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  const messageHref = (id) => "/messages/" + encodeURIComponent(id);
  const sessionHref = (id) => "/sessions/" + encodeURIComponent(id);

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  async function postJSON(url, data) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(data),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { /* not JSON */ }
    return { ok: response.ok, status: response.status, answer };
  }

  // -- the same pieces the templates render (macros.html) ---------------------
  function actionBadge(action, status, stage) {
    const text = status === "rejected" ? `refused (${action}) at ${stage}` : (action || "…");
    return h("span", { class: `badge action-${action || "none"}` }, text);
  }

  function chips(checks) {
    const all = checks || [];
    const loud = all.filter((c) => c.result !== "pass" && c.result !== "none");
    return h("span", { class: "chips" },
      loud.map((c) => h("span", { class: `chip result-${c.result}` }, `${c.check}=${c.result}`)),
      all.length > loud.length ? h("span", { class: "quiet" }, `${all.length - loud.length} pass or none`) : null);
  }

  function subjectOf(m) {
    if (m.subject !== null && m.subject !== undefined) return m.subject;
    return m.status === "rejected" && m.stage !== "message" ? "(refused before DATA)" : "(no subject)";
  }

  function messageRow(m) {
    return h("tr", { "data-seq": m.seq },
      h("td", { class: "time" }, clock(m.ts)),
      h("td", {}, actionBadge(m.action, m.status, m.stage)),
      h("td", { class: "from" }, m.from || ""),
      h("td", { class: "subject" }, h("a", { href: messageHref(m.id) }, subjectOf(m))),
      h("td", { class: "envelope" }, `${m.mail_from ?? ""} → ${(m.rcpt_tos || []).join(", ")}`),
      h("td", { class: "peer" }, m.peer_ip || ""),
      h("td", {}, chips(m.checks)));
  }

  function sessionRow(s) {
    return h("tr", { "data-seq": s.last_seq },
      h("td", { class: "time" }, clock(s.opened)),
      h("td", {}, h("a", { href: sessionHref(s.id) }, s.id)),
      h("td", {}, s.protocol),
      h("td", { class: "peer" }, (s.peer_ip || "") + (s.peer_port ? `:${s.peer_port}` : "")),
      h("td", { class: "helo" }, s.helo || ""),
      h("td", {}, s.policy || ""),
      h("td", { class: "num" }, s.verdicts),
      h("td", {}, (s.actions || []).map((a) => [actionBadge(a), " "])),
      h("td", {}, s.open ? h("span", { class: "state open" }, "open")
        : h("span", { class: "state closed" }, s.close_reason || "closed")));
  }

  function stepItem(step) {
    switch (step.type) {
      case "line":
        return h("li", { class: `line ${step.direction}` },
          h("span", { class: "who" }, step.direction === "in" ? "C:" : "S:"), h("span", { class: "text" }, step.text));
      case "verdict": {
        const v = step.verdict || {};
        return h("li", { class: `verdict result-${v.result}` },
          h("span", { class: "check" }, v.check), "=", h("span", { class: "result" }, v.result), " ",
          h("span", { class: `badge action-${step.action}` }, step.action), " ",
          h("span", { class: "stage" }, step.stage), " ", h("span", { class: "reason" }, v.reason));
      }
      case "delivered": {
        const where = (step.locations || []).map((l) => `${l[0]}/${l[1]}`).join(", ");
        return h("li", { class: `outcome action-${step.action}` }, "Message ",
          h("a", { href: messageHref(step.message_id) }, step.message_id), " delivered, final action ",
          h("span", { class: `badge action-${step.action}` }, step.action), where ? ` → ${where}` : "");
      }
      case "rejected":
        return h("li", { class: `outcome action-${step.action}` }, `Refused at ${step.stage}, final action `,
          h("span", { class: `badge action-${step.action}` }, step.action),
          step.message_id ? [" (message ", h("a", { href: messageHref(step.message_id) }, step.message_id), ")"] : "",
          ": ", h("span", { class: "text" }, step.reply),
          "from_" in step
            ? h("div", { class: "refused-mail" }, "From ", h("span", { class: "from" }, step.from_ || "(none)"),
              ", Subject ", h("span", { class: "subject" }, step.subject || "(none)"))
            : "");
      case "xclient":
        return h("li", { class: "xclient" }, "XCLIENT: ",
          Object.entries(step.attributes || {}).map(([k, v]) => `${k}=${v} `));
      case "close":
        return h("li", { class: "close" }, `Session closed: ${step.reason}`);
      default:
        return null;
    }
  }

  // A bus record as a dialogue step (the index does the same on the server).
  function stepOf(r) {
    switch (r.kind) {
      case "session.line": return { type: "line", direction: r.direction, text: r.text };
      case "verdict": return { type: "verdict", verdict: r.verdict, action: r.action, stage: r.stage };
      case "message.delivered": return { type: "delivered", message_id: r.message_id, action: r.action, locations: r.locations };
      case "message.rejected": {
        const step = { type: "rejected", message_id: r.message_id, stage: r.stage, action: r.action, reply: r.reply };
        // refused at DATA: what the message claimed to be (as the index does)
        return r.source === undefined ? step : { ...step, from_: r.from_ ?? null, subject: r.subject ?? null };
      }
      case "session.xclient": return { type: "xclient", attributes: r.attributes };
      case "session.close": return { type: "close", reason: r.reason };
      default: return null;
    }
  }

  // -- the event stream ---------------------------------------------------------
  function setPolicy(name) {
    const link = $("policy-name");
    if (link && name) link.textContent = name;
  }

  function stream(params, onRecord) {
    const live = $("live");
    const source = new EventSource("/api/events?" + new URLSearchParams(params).toString());
    source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
    source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
    source.onmessage = (event) => {
      let record;
      try { record = JSON.parse(event.data); } catch (e) { return; }
      if (record.kind === "policy.changed") setPolicy(record.name);
      if (onRecord) onRecord(record);
    };
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  // -- pages --------------------------------------------------------------------
  function livePage() {
    let shown = Number(body.dataset.since) || 0;
    let timer = null;

    function fill(tbodyId, emptyId, rows, render) {
      const tbody = $(tbodyId);
      tbody.replaceChildren(...rows.map((row) => {
        const tr = render(row);
        if (Number(tr.dataset.seq) > shown) tr.classList.add("new");
        return tr;
      }));
      $(emptyId).hidden = rows.length > 0;
    }

    const search = $("search");
    const searchStatus = $("search-status");
    let asked = 0;  // answers to older queries that arrive late are dropped

    async function refresh() {
      timer = null;
      const query = search ? search.value.trim() : "";
      const mine = ++asked;
      const messagesUrl = "/api/messages?" + new URLSearchParams(query ? { limit: 100, q: query } : { limit: 100 });
      try {
        const answer = await fetch(messagesUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        const m = await answer.json();
        if (mine !== asked) return;
        if (!answer.ok) {
          searchStatus.textContent = m.error || "the search was refused";
          return;
        }
        searchStatus.textContent = query ? `${m.messages.length} found` : "";
        const s = await getJSON("/api/sessions?limit=100");
        fill("messages", "messages-empty", m.messages, messageRow);
        fill("sessions", "sessions-empty", s.sessions, sessionRow);
        shown = Math.max(shown, ...m.messages.map((x) => x.seq || 0), ...s.sessions.map((x) => x.last_seq || 0));
        body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
      } catch (e) { /* the next event retries */ }
    }

    stream({ since: body.dataset.since }, (record) => {
      if (record.kind !== "policy.changed" && !timer) timer = setTimeout(refresh, 150);
    });
    if (search) {
      search.addEventListener("input", () => {
        clearTimeout(timer);
        timer = setTimeout(refresh, 150);
      });
    }
  }

  function sessionPage() {
    const id = body.dataset.session;
    const list = $("dialogue");
    // Steps up to data-shown are already on the page; the stream may repeat some.
    let shown = Math.max(Number(body.dataset.since) || 0, Number(body.dataset.shown) || 0);
    stream({ since: body.dataset.since, session: id }, (record) => {
      if (record.session_id !== id || record.seq <= shown) return;
      shown = record.seq;
      const item = stepItem(stepOf(record) || {});
      if (item) list.append(item);
      if (record.kind === "session.close") $("session-state").textContent = `closed: ${record.reason}`;
    });
  }

  function policyPage() {
    const status = $("policy-status");

    async function show() {
      const policy = await getJSON("/api/policy");
      $("current-policy").textContent = policy.name;
      $("current-description").textContent = policy.description;
      $("policy-toml").textContent = policy.toml;
      setPolicy(policy.name);
      for (const button of document.querySelectorAll("button.switch")) {
        button.disabled = button.dataset.policy === policy.name;
      }
    }

    for (const button of document.querySelectorAll("button.switch")) {
      button.addEventListener("click", async () => {
        status.textContent = `Switching to ${button.dataset.policy}…`;
        const { ok, answer } = await postJSON("/api/policy", { policy: button.dataset.policy });
        await show();  // the page shows the new policy before the status says it runs (one state, not two)
        status.textContent = ok ? `Now running policy ${answer.policy}: the next message is judged by it.`
          : `Not switched: ${answer.error || "the server refused"}`;
      });
    }
    stream({}, (record) => { if (record.kind === "policy.changed") show(); });
  }

  function attacksPage() {
    const status = $("attacks-status");
    const buttons = [$("run-attacks"), $("send-attacks")];
    const labels = { idle: "Not run yet.", running: "Running…", done: "Done.", error: "Failed." };

    function matrixTable(outcomes) {
      const policies = [...new Set(outcomes.map((o) => o.policy))];
      const attacks = [...new Set(outcomes.map((o) => o.attack))];
      const cells = new Map(outcomes.map((o) => [`${o.attack}\u0000${o.policy}`, o]));
      const head = h("thead", {}, h("tr", {}, h("th", {}, "attack"), policies.map((p) => h("th", {}, p))));
      const rows = attacks.map((a) => h("tr", {}, h("td", { class: "nowrap" }, a), policies.map((p) => {
        const o = cells.get(`${a}\u0000${p}`);
        if (!o) return h("td", {}, "…");
        const caught = (o.caught_by || []).length && o.outcome !== "accepted" ? ` [${o.caught_by.join(", ")}]` : "";
        return h("td", { class: `cell outcome-${o.outcome}${o.ok ? "" : " unexpected"}`,
          title: (o.problems || []).join("; ") || (o.reply || "") },
        (o.ok ? "" : "! ") + o.outcome + caught);
      })));
      return [head, h("tbody", {}, rows)];
    }

    function render(job) {
      status.dataset.state = job.state;
      const count = job.mode === "send" ? (job.sent || []).length : (job.outcomes || []).length;
      const what = job.mode === "send" ? "entries sent" : "outcomes";
      status.textContent = labels[job.state] + (count ? ` (${count} ${what})` : "");
      for (const button of buttons) button.disabled = job.state === "running";
      $("attacks-progress").textContent = (job.progress || []).join("\n");
      $("attacks-matrix").textContent = job.matrix || "";
      $("matrix-text-box").hidden = !job.matrix;
      $("attacks-error").textContent = job.error || "";
      $("attacks-error").hidden = !job.error;
      const table = $("attacks-table");
      table.hidden = job.mode !== "matrix" || !(job.outcomes || []).length;
      if (!table.hidden) table.replaceChildren(...matrixTable(job.outcomes));
      $("sent-table").hidden = job.mode !== "send" || !(job.sent || []).length;
      $("sent-body").replaceChildren(...(job.sent || []).map((e) => h("tr", {},
        h("td", { class: "nowrap" }, e.attack), h("td", {}, e.class), h("td", {}, e.title), h("td", {}, e.result))));
    }

    async function poll() {
      try {
        const job = await getJSON("/api/attacks");
        render(job);
        if (job.state === "running") setTimeout(poll, 1000);
      } catch (e) { setTimeout(poll, 2000); }
    }

    async function launch(request) {
      for (const button of buttons) button.disabled = true;
      const { ok, answer } = await postJSON("/api/attacks", request);
      if (!ok && !answer.state) {
        status.textContent = `Not started: ${answer.error || "the server refused"}`;
        for (const button of buttons) button.disabled = false;
        return;
      }
      render(answer);
      poll();
    }

    $("attacks-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const policies = [...$("attacks-form").querySelectorAll("input[name=policy]:checked")].map((i) => i.value);
      launch({ mode: "matrix", policies });
    });
    $("send-form").addEventListener("submit", (event) => {
      event.preventDefault();
      launch({ mode: "send" });
    });
    poll();
    stream({});
  }

  const pages = { index: livePage, session: sessionPage, policy: policyPage, attacks: attacksPage };
  (pages[page] || (() => stream({})))();
})();
