// The payer's side of ZeroPay: the client-side digest protocol (zeropay_proto/answers.py),
// passkeys (WebAuthn) whose signature covers the payment, and the enroll and pay pages.
// No framework: the pages are two forms. Every string a payer reads comes from the page's
// table (zeropay_server/i18n), in the language the server chose.
"use strict";

const DOMAIN = "zeropay/factor-digest/v1";
// The palettes of zeropay_proto.answers (the browser tests hold the two to the same vectors).
const COLOURS = ["red", "orange", "amber", "yellow", "lime", "green", "teal", "cyan",
  "blue", "indigo", "violet", "pink", "brown", "grey", "black", "white"];
const EMOJI = {
  apple: "\u{1f34e}", banana: "\u{1f34c}", cherry: "\u{1f352}", grapes: "\u{1f347}",
  rocket: "\u{1f680}", bicycle: "\u{1f6b2}", anchor: "\u2693", umbrella: "\u2614",
  cat: "\u{1f408}", dog: "\u{1f415}", owl: "\u{1f989}", fish: "\u{1f41f}",
  sun: "\u{1f31e}", moon: "\u{1f319}", star: "\u2b50", snowflake: "\u2744",
  guitar: "\u{1f3b8}", key: "\u{1f511}", gift: "\u{1f381}", house: "\u{1f3e0}",
};
const EMOJI_NAMES = Object.fromEntries(Object.entries(EMOJI).map(([n, c]) => [c, n]));
const MAX_PICKS = 6;
const KNOWLEDGE = ["PIN", "COLOUR", "EMOJI", "WORDS"];

// An answer that cannot be a factor's: its message is the key of the string that says why.
class AnswerError extends Error {}

function picks(names, palette, factor) {
  if (names.length < 1 || names.length > MAX_PICKS || !names.every((n) => palette.includes(n))) {
    throw new AnswerError("error_picks");
  }
  return new TextEncoder().encode(names.join(","));
}

// The canonical form of an answer, as bytes (zeropay_proto.answers.canonical_answer).
function canonicalAnswer(factor, answer) {
  if (factor === "PIN") {
    if (!/^[0-9]{4,12}$/.test(answer)) throw new AnswerError("error_PIN");
    return new TextEncoder().encode(answer);
  }
  if (factor === "COLOUR") {
    return picks(answer.toLowerCase().split(/[,\s]+/).filter((n) => n), COLOURS, factor);
  }
  if (factor === "EMOJI") {
    const chars = Array.from(answer.replaceAll("\ufe0f", ""));
    return picks(chars.map((c) => EMOJI_NAMES[c] || "?"), Object.keys(EMOJI), factor);
  }
  if (factor === "WORDS") {
    const words = answer.normalize("NFKC").toLowerCase().replace(/^ +| +$/g, "").split(/ +/);
    const ok = (w) => w.length > 0 && /^[\p{L}\p{M}\p{N}]+$/u.test(w);
    if (words.length < 1 || words.length > MAX_PICKS || !words.every(ok)) {
      throw new AnswerError("error_WORDS");
    }
    return new TextEncoder().encode(words.join(" "));
  }
  if (!/^(?:[0-9a-fA-F]{2}){1,512}$/.test(answer)) throw new AnswerError("error_template");
  return Uint8Array.from(answer.match(/../g), (h) => parseInt(h, 16));
}

function lengthPrefixed(fields) {
  const size = fields.reduce((n, f) => n + 2 + f.length, 0);
  const out = new Uint8Array(size);
  let at = 0;
  for (const f of fields) {
    out[at] = f.length >> 8;
    out[at + 1] = f.length & 0xff;
    out.set(f, at + 2);
    at += 2 + f.length;
  }
  return out;
}

const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

// SHA-256(LP(domain) || LP(user uuid) || LP(factor) || LP(canonical answer)), as hex.
async function factorDigest(userId, factor, answer) {
  const text = (s) => new TextEncoder().encode(s);
  const data = lengthPrefixed([text(DOMAIN), text(userId.toLowerCase()), text(factor),
    canonicalAnswer(factor, answer)]);
  return hex(await crypto.subtle.digest("SHA-256", data));
}

// The user a session belongs to: its first 16 bytes (zeropay_proto.identifiers).
function sessionUser(sessionId) {
  const raw = atob(sessionId.replaceAll("-", "+").replaceAll("_", "/") + "=");
  const h = hex(Uint8Array.from(raw.slice(0, 16), (c) => c.charCodeAt(0)));
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function replayHeaders() {
  return {
    "Content-Type": "application/json",
    "X-Nonce": crypto.randomUUID(),
    "X-Timestamp": String(Date.now()),
  };
}

// A call to the API: its status and JSON body. A network failure is status 0, and a body
// that is not JSON (a proxy's page) is empty: either is "try again in a moment".
async function call(path, init = {}) {
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    return { status: 0, body: {}, headers: new Headers() };
  }
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  return { status: response.status, body, headers: response.headers };
}

const post = (path, body) => call(path, {
  method: "POST", headers: replayHeaders(), body: JSON.stringify(body),
});

// WebAuthn's JSON forms (the server's options, the credential the server checks): binary
// fields travel as unpadded base64url.
const fromB64url = (text) => Uint8Array.from(
  atob(text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4)),
  (c) => c.charCodeAt(0));
const toB64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const descriptors = (list) => (list || []).map((c) => ({ ...c, id: fromB64url(c.id) }));

// Which WebAuthn JSON path the page took last: "native" (the browser's
// PublicKeyCredential.parse*OptionsFromJSON and toJSON) or "fallback" (the code below).
const webauthn = { path: null };
const nativeJSON = (parse) => typeof PublicKeyCredential !== "undefined"
  && typeof PublicKeyCredential[parse] === "function";

// navigator.credentials.create for the server's registration options.
async function createPasskey(options) {
  if (nativeJSON("parseCreationOptionsFromJSON")) {
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
    const credential = await navigator.credentials.create({ publicKey });
    if (typeof credential.toJSON === "function") {
      webauthn.path = "native";
      return credential.toJSON();
    }
    return registrationJSON(credential);
  }
  const publicKey = {
    ...options,
    challenge: fromB64url(options.challenge),
    user: { ...options.user, id: fromB64url(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  return registrationJSON(await navigator.credentials.create({ publicKey }));
}

function registrationJSON(credential) {
  webauthn.path = "fallback";
  return {
    id: credential.id,
    rawId: toB64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toB64url(credential.response.clientDataJSON),
      attestationObject: toB64url(credential.response.attestationObject),
      transports: credential.response.getTransports ? credential.response.getTransports() : [],
    },
    clientExtensionResults: {},
  };
}

// navigator.credentials.get for a session's request options: the passkey signs the payment.
async function signWithPasskey(options) {
  if (nativeJSON("parseRequestOptionsFromJSON")) {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
    const credential = await navigator.credentials.get({ publicKey });
    if (typeof credential.toJSON === "function") {
      webauthn.path = "native";
      return credential.toJSON();
    }
    return assertionJSON(credential);
  }
  const publicKey = {
    ...options,
    challenge: fromB64url(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  };
  return assertionJSON(await navigator.credentials.get({ publicKey }));
}

function assertionJSON(credential) {
  webauthn.path = "fallback";
  const r = credential.response;
  return {
    id: credential.id,
    rawId: toB64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toB64url(r.clientDataJSON),
      authenticatorData: toB64url(r.authenticatorData),
      signature: toB64url(r.signature),
      userHandle: r.userHandle ? toB64url(r.userHandle) : null,
    },
    clientExtensionResults: {},
  };
}

// ------------------------------------------------------------------------------ the pages

// The page's strings (zeropay_server/i18n), with {name} filled in.
const STRINGS = JSON.parse(document.getElementById("strings")?.textContent || "{}");
function t(key, values = {}) {
  const text = STRINGS[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}
const $ = (id) => document.getElementById(id);
const LANGUAGE = document.documentElement.lang || "en";
// The payer's own locale where it is of the page's language (de-CH for a Swiss payer of the
// German page), for amounts and dates; else the page's language.
const LOCALE = (navigator.languages || []).find((l) => l.split("-")[0] === LANGUAGE) || LANGUAGE;

// The message of the page's current state: announced (aria-live), and an error takes focus
// (so a payer on a small screen, or with a screen reader, is taken to it).
function say(text, kind) {
  const result = $("result");
  result.textContent = text;
  result.className = kind || "";
  if (kind === "error") result.focus();
}

// The language links keep the page's own address and query (a grant, say).
function languageLinks() {
  for (const link of document.querySelectorAll("a[data-lang]")) {
    const target = new URL(location.href);
    target.searchParams.set("lang", link.dataset.lang);
    link.href = target.href;
  }
}

// An input that fits each factor: a labelled PIN or words field, or a picker that is a
// radio group with a roving tabindex (one Tab stop; arrows move, Space or Enter chooses in
// order), whose choices are kept in a hidden input.
let factorCount = 0;
function answerInput(factor) {
  const id = `factor-${factor}-${factorCount++}`;
  const name = KNOWLEDGE.includes(factor) ? factor : "template";
  const box = document.createElement(KNOWLEDGE.includes(factor) && factor !== "PIN" && factor !== "WORDS" ? "fieldset" : "div");
  box.className = "factor";
  box.dataset.factor = factor;
  const hint = document.createElement("p");
  hint.className = "hint";
  hint.id = `${id}-hint`;
  hint.textContent = t(`hint_${name}`);
  if (factor !== "COLOUR" && factor !== "EMOJI") {
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = t(`factor_${name}`);
    const input = document.createElement("input");
    input.id = id;
    input.name = factor;
    input.autocomplete = "off";
    input.setAttribute("aria-describedby", hint.id);
    if (factor === "PIN") {
      input.type = "password";
      input.inputMode = "numeric";
    } else {
      input.spellcheck = false;
    }
    box.append(label, input, hint);
    return box;
  }
  const legend = document.createElement("legend");
  legend.id = `${id}-legend`;
  legend.textContent = t(`factor_${name}`);
  const kept = document.createElement("input");
  kept.type = "hidden";
  kept.name = factor;
  const choices = factor === "COLOUR" ? COLOURS : Object.keys(EMOJI);
  const spoken = (pick) => t(`${factor === "COLOUR" ? "colour" : "emoji"}_${pick}`);
  const group = document.createElement("div");
  group.className = "palette";
  group.setAttribute("role", "radiogroup");
  group.setAttribute("aria-labelledby", legend.id);
  group.setAttribute("aria-describedby", hint.id);
  const chosen = document.createElement("p");
  chosen.className = "chosen";
  chosen.setAttribute("aria-live", "polite");
  const picked = [];
  const show = () => {
    kept.value = factor === "COLOUR" ? picked.join(",") : picked.map((p) => EMOJI[p]).join("");
    chosen.textContent = picked.length
      ? t("chosen", { list: picked.map(spoken).join(", ") }) : t("chosen_none");
  };
  const buttons = choices.map((pick, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.pick = pick;
    button.setAttribute("role", "radio");
    button.setAttribute("aria-checked", "false");
    button.setAttribute("aria-label", spoken(pick));
    button.title = spoken(pick);
    button.tabIndex = index === 0 ? 0 : -1;
    if (factor === "COLOUR") button.classList.add(`swatch-${pick}`);
    else button.textContent = `${EMOJI[pick]}\ufe0f`;  // shown as emoji, never as text
    button.addEventListener("click", () => {
      focusOn(index);
      if (picked.length < MAX_PICKS) picked.push(pick);
      show();
    });
    return button;
  });
  function focusOn(index) {
    buttons.forEach((b, i) => {
      b.tabIndex = i === index ? 0 : -1;
      b.setAttribute("aria-checked", String(i === index));
    });
    buttons[index].focus();
  }
  group.addEventListener("keydown", (event) => {
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (step !== undefined) {
      event.preventDefault();
      focusOn((at + step + buttons.length) % buttons.length);
    } else if (event.key === "Home" || event.key === "End") {
      event.preventDefault();
      focusOn(event.key === "Home" ? 0 : buttons.length - 1);
    }
  });
  group.append(...buttons);
  const undo = document.createElement("button");
  undo.type = "button";
  undo.className = "secondary";
  undo.textContent = t("remove_last");
  undo.addEventListener("click", () => { picked.pop(); show(); });
  show();
  box.append(legend, hint, group, chosen, undo, kept);
  return box;
}

async function digestsOf(form, userId, factors) {
  const out = {};
  for (const factor of factors) {
    try {
      out[factor] = await factorDigest(userId, factor, form.elements[factor].value);
    } catch (error) {
      if (!(error instanceof AnswerError)) throw error;
      const name = KNOWLEDGE.includes(factor) ? factor : "template";
      throw new AnswerError(t("check_answer", { factor: t(`factor_${name}`), reason: t(error.message) }));
    }
  }
  return out;
}

// An amount in minor units, in the payer's locale: 4250 EUR with exponent 2 is "€42.50"
// in English, "42,50 €" in German. The decimal string keeps it exact (no binary float).
function formatAmount(minor, currency, exponent, locale = LOCALE) {
  if (minor === null || minor === undefined) return null;
  const digits = String(minor).padStart(exponent + 1, "0");
  const exact = exponent ? `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}` : digits;
  if (!currency) return exact;
  return new Intl.NumberFormat(locale, {
    style: "currency", currency, minimumFractionDigits: exponent, maximumFractionDigits: exponent,
  }).format(exact);
}

const clock = (seconds) => `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;

// The pay page: one state at a time. Loading; invalid (no form); pending (the form and a
// countdown); then a final state: verified (a receipt, and back to the shop after a
// countdown), failed (no attempts left), expired, or locked; or a passing one: a wrong
// answer (attempts left), or the service unavailable (answers kept, try again).
const RETURN_SECONDS = 5;
function payPage() {
  const sessionId = decodeURIComponent(location.pathname.split("/").pop());
  const form = $("answers");
  const controls = $("controls");
  let session = null;
  let ticking = null;
  let payee = "";

  const shopUrl = (url, status) => {
    const target = new URL(url);
    target.searchParams.set("session_id", sessionId);
    target.searchParams.set("status", status);
    return target.href;
  };

  function finish(text, kind, status, { redirect = false } = {}) {
    clearInterval(ticking);
    controls.disabled = true;
    form.hidden = true;
    $("countdown").hidden = true;
    $("cancel").hidden = true;
    say(text, kind);
    const url = session && session.return_url;
    if (!url) return;
    const back = $("back");
    back.href = shopUrl(url, status);
    back.hidden = false;
    if (!redirect) return;
    let left = RETURN_SECONDS;
    const returning = $("returning");
    returning.hidden = false;
    returning.textContent = t("returning", { seconds: left });
    const timer = setInterval(() => {
      left -= 1;
      returning.textContent = t("returning", { seconds: Math.max(left, 0) });
      if (left <= 0) {
        clearInterval(timer);
        location.assign(back.href);
      }
    }, 1000);
  }

  function showSigned() {
    const note = $("passkey");
    note.hidden = !session.passkey;
    if (!session.passkey) return;
    const d = session.passkey.linked_data;
    const amount = formatAmount(d.amount, d.currency, session.payment.exponent);
    note.textContent = t("passkey_will_sign", { amount, payee });
  }

  function countdown(seconds) {
    const deadline = Date.now() + seconds * 1000;
    const shown = $("countdown");
    shown.hidden = false;
    const tick = () => {
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      shown.textContent = t("expires_in", { time: clock(left) });
      if (left === 0) finish(t("expired"), "error", "expired");
    };
    tick();
    ticking = setInterval(tick, 1000);
  }

  function receipt(at) {
    const p = session.payment;
    $("receipt-amount").textContent = formatAmount(p.amount, p.currency, p.exponent) || "—";
    $("receipt-payee").textContent = payee;
    $("receipt-at").textContent = new Intl.DateTimeFormat(LOCALE, {
      dateStyle: "medium", timeStyle: "short",
    }).format(at);
    $("receipt-reference").textContent = sessionId.slice(-12);
    $("receipt").hidden = false;
  }

  async function submit(event) {
    event.preventDefault();
    if (controls.disabled) return;
    const userId = sessionUser(sessionId);
    const knowledge = session.required_factors.filter((f) => f !== "PASSKEY");
    const body = { session_id: sessionId, user_uuid: userId };
    try {
      body.factors = await digestsOf(form, userId, knowledge);
    } catch (error) {
      if (error instanceof AnswerError) return say(error.message, "error");
      throw error;
    }
    controls.disabled = true;
    say(t("checking"), "");
    try {
      if (session.passkey) {
        try {
          body.passkey = await signWithPasskey(session.passkey.options);
        } catch {  // cancelled, or no passkey here: nothing was sent, nothing counted
          return say(t("passkey_did_not_sign"), "error");
        }
      }
      const done = await post("/v1/verification/verify", body);
      if (done.status === 200) {
        receipt(new Date());
        return finish(t("verified"), "ok", "verified", { redirect: true });
      }
      if (done.status === 401) {
        // Each attempt signs its own challenge: the next one comes with the session's status.
        const fresh = await call(`/v1/verification/status/${encodeURIComponent(sessionId)}`);
        if (fresh.status === 200) session = { ...session, ...fresh.body };
        if (session.status === "expired") return finish(t("expired"), "error", "expired");
        const left = done.body.attempts_remaining;
        if (left === 0) return finish(t("exhausted"), "error", "failed");
        showSigned();
        return say(t("failed", { left }), "error");
      }
      if (done.status === 429 && done.body.code === "ACCOUNT_LOCKED") {
        const minutes = Math.max(1, Math.ceil((done.body.retry_after || 60) / 60));
        return finish(t("locked", { minutes }), "error", "failed");
      }
      if (done.status === 404) return finish(t("invalid"), "error", "failed");
      return say(t("unavailable"), "error");  // 503, 429 and the like: the answers stay
    } finally {
      if (!form.hidden) controls.disabled = false;
    }
  }

  async function load() {
    const found = await call(`/v1/verification/status/${encodeURIComponent(sessionId)}`);
    $("loading").hidden = true;
    if (found.status === 400 || found.status === 404) return say(t("invalid"), "error");
    if (found.status !== 200) return say(t("unavailable"), "error");
    session = found.body;
    const p = session.payment;
    payee = p.payee_name || p.payee || "—";
    $("amount").textContent = formatAmount(p.amount, p.currency, p.exponent) || "—";
    $("payee").textContent = payee;
    $("payment").hidden = false;
    if (session.cancel_url) {
      $("cancel").href = shopUrl(session.cancel_url, "cancelled");
      $("cancel").hidden = false;
    }
    if (session.status === "verified") {
      return finish(t("verified"), "ok", "verified", { redirect: true });
    }
    if (session.status === "expired") return finish(t("expired"), "error", "expired");
    if (session.status !== "pending" || session.attempts_remaining === 0) {
      return finish(t("exhausted"), "error", "failed");
    }
    const factors = form.querySelector(".factors");
    for (const factor of session.required_factors) {
      if (factor !== "PASSKEY") factors.append(answerInput(factor));
    }
    showSigned();
    form.hidden = false;
    form.addEventListener("submit", submit);
    countdown(session.expires_in);
  }

  load();
}

// The enroll page: for the user of the enrollment link a shop sent (?grant=), or, on the
// embedded development server only, for a user id typed in a field marked as a demo.
function enrollPage() {
  const form = $("enrollment");
  const controls = $("controls");
  const grant = new URLSearchParams(location.search).get("grant");
  const demo = document.body.dataset.demo === "true";
  let userId = null;

  async function submit(event) {
    event.preventDefault();
    if (controls.disabled) return;
    const user = userId || form.elements.user_uuid.value.trim();
    const named = KNOWLEDGE.filter((f) => form.elements[f].value !== "");
    if (named.length < 3) return say(t("need_three"), "error");
    let factors;
    try {
      factors = await digestsOf(form, user, named);
    } catch (error) {
      if (error instanceof AnswerError) return say(error.message, "error");
      throw error;
    }
    const withPasskey = form.elements.passkey.checked;
    const body = { user_uuid: user, device_id: "browser", factors, register_passkey: withPasskey };
    if (grant) body.grant = grant;
    controls.disabled = true;
    say(t("saving"), "");
    let done = false;
    try {
      const stored = await post("/v1/enrollment/store", body);
      if (stored.status === 409) return say(t("already_enrolled"), "error");
      if (stored.status === 400 && stored.body.field === "grant") return say(t("grant_invalid"), "error");
      if (stored.status >= 500 || stored.status === 0 || stored.status === 429) {
        return say(t("enroll_unavailable"), "error");
      }
      if (stored.status !== 201) return say(t("enroll_failed"), "error");
      done = true;
      const count = stored.body.factor_count;
      if (!withPasskey) return say(t("enrolled", { count }), "ok");
      let credential;
      try {
        credential = await createPasskey(stored.body.passkey_options);
      } catch {
        return say(t("passkey_not_created", { count }), "error");
      }
      const added = await post("/v1/passkeys", { user_uuid: user, credential });
      if (added.status === 201) return say(t("enrolled_passkey", { count }), "ok");
      return say(t("passkey_refused", { count }), "error");
    } finally {
      if (!done) controls.disabled = false;
      else form.hidden = true;
    }
  }

  async function load() {
    if (grant) {
      const found = await call(`/v1/enrollment/grants/${encodeURIComponent(grant)}`);
      $("loading").hidden = true;
      if (found.status === 400 || found.status === 404 || found.status === 410) {
        return say(t("grant_invalid"), "error");
      }
      if (found.status !== 200) return say(t("enroll_unavailable"), "error");
      userId = found.body.user_uuid;
    } else {
      $("loading").hidden = true;
      if (!demo) return say(t("need_link"), "error");
      $("demo").hidden = false;
      if (!form.elements.user_uuid.value) form.elements.user_uuid.value = crypto.randomUUID();
    }
    const chosen = form.querySelector(".factors");
    for (const factor of KNOWLEDGE) chosen.append(answerInput(factor));
    form.hidden = false;
    form.addEventListener("submit", submit);
  }

  load();
}

languageLinks();
window.zeropay = { factorDigest, canonicalAnswer, sessionUser, formatAmount, webauthn };
if (document.body.dataset.page === "pay") payPage();
if (document.body.dataset.page === "enroll") enrollPage();
