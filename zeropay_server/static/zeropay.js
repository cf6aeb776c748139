// The payer's side of ZeroPay: the client-side digest protocol (zeropay_proto/answers.py),
// passkeys (WebAuthn) whose signature covers the payment, and the enroll and pay pages.
// No framework: the pages are two forms.
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

class AnswerError extends Error {}

function picks(names, palette, factor) {
  if (names.length < 1 || names.length > MAX_PICKS || !names.every((n) => palette.includes(n))) {
    throw new AnswerError(`${factor}: 1 to ${MAX_PICKS} picks from the palette`);
  }
  return new TextEncoder().encode(names.join(","));
}

// The canonical form of an answer, as bytes (zeropay_proto.answers.canonical_answer).
function canonicalAnswer(factor, answer) {
  if (factor === "PIN") {
    if (!/^[0-9]{4,12}$/.test(answer)) throw new AnswerError("a PIN is 4 to 12 digits");
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
      throw new AnswerError(`1 to ${MAX_PICKS} words of letters or digits`);
    }
    return new TextEncoder().encode(words.join(" "));
  }
  if (!/^(?:[0-9a-fA-F]{2}){1,512}$/.test(answer)) throw new AnswerError("a template as hex");
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

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: replayHeaders(), body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

// WebAuthn's JSON forms (the server's options, the credential the server checks): binary
// fields travel as unpadded base64url.
const fromB64url = (text) => Uint8Array.from(
  atob(text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4)),
  (c) => c.charCodeAt(0));
const toB64url = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
  .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const descriptors = (list) => (list || []).map((c) => ({ ...c, id: fromB64url(c.id) }));

// navigator.credentials.create for the server's registration options.
async function createPasskey(options) {
  const publicKey = {
    ...options,
    challenge: fromB64url(options.challenge),
    user: { ...options.user, id: fromB64url(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  const credential = await navigator.credentials.create({ publicKey });
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
  const publicKey = {
    ...options,
    challenge: fromB64url(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  };
  const credential = await navigator.credentials.get({ publicKey });
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

// An input that fits each factor type: a PIN pad, palette pickers, words, a template.
function answerInput(factor) {
  const box = document.createElement("fieldset");
  box.className = "factor";
  box.dataset.factor = factor;
  const legend = document.createElement("legend");
  legend.textContent = factor;
  box.append(legend);
  const input = document.createElement("input");
  input.name = factor;
  input.autocomplete = "off";
  if (factor === "PIN") {
    input.type = "password";
    input.inputMode = "numeric";
    input.placeholder = "4 to 12 digits";
  } else if (factor === "WORDS") {
    input.placeholder = "your words";
  } else if (!KNOWLEDGE.includes(factor)) {
    input.placeholder = "device template (hex)";
  } else {
    input.readOnly = true;
    input.placeholder = "pick below";
    const choices = factor === "COLOUR" ? COLOURS : Object.keys(EMOJI);
    const pad = document.createElement("div");
    pad.className = "palette";
    for (const name of choices) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.pick = name;
      button.title = name;
      button.textContent = factor === "COLOUR" ? "" : EMOJI[name];
      if (factor === "COLOUR") button.style.background = name === "amber" ? "#ffbf00" : name;
      button.addEventListener("click", () => {
        const sep = factor === "COLOUR" && input.value ? "," : "";
        input.value += sep + (factor === "COLOUR" ? name : EMOJI[name]);
      });
      pad.append(button);
    }
    const clear = document.createElement("button");
    clear.type = "button";
    clear.textContent = "clear";
    clear.addEventListener("click", () => { input.value = ""; });
    pad.append(clear);
    box.append(input, pad);
    return box;
  }
  box.append(input);
  return box;
}

async function digestsOf(form, userId, factors) {
  const out = {};
  for (const factor of factors) out[factor] = await factorDigest(userId, factor, form.elements[factor].value);
  return out;
}

function say(text, kind) {
  const result = document.getElementById("result");
  result.textContent = text;
  result.className = kind;
}

async function sessionStatus(sessionId) {
  const status = await fetch(`/v1/verification/status/${sessionId}`);
  return status.status === 200 ? status.json() : null;
}

// An amount in minor units, in the payer's locale: 4250 EUR with exponent 2 is "€42.50"
// in English, "42,50 €" in German. The decimal string keeps it exact (no binary float).
function formatAmount(minor, currency, exponent) {
  if (minor === null || minor === undefined) return null;
  const digits = String(minor).padStart(exponent + 1, "0");
  const exact = exponent ? `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}` : digits;
  if (!currency) return exact;
  return new Intl.NumberFormat(navigator.languages, {
    style: "currency", currency, minimumFractionDigits: exponent, maximumFractionDigits: exponent,
  }).format(exact);
}

// What the passkey will sign, in words: the linked data of the session's next attempt.
function showSigned(passkey, payment) {
  const note = document.getElementById("passkey");
  note.hidden = !passkey;
  if (!passkey) return;
  const d = passkey.linked_data;
  const amount = formatAmount(d.amount, d.currency, payment.exponent) || "this payment";
  note.textContent = `Your passkey will sign: ${amount} to ${d.payee || "—"}.`;
}

// Back to the merchant's page, with the session and its outcome. Only a courtesy: the
// merchant confirms the outcome with the API (status, receipt or webhook), never from this.
function backTo(url, sessionId, status) {
  if (!url) return;
  const target = new URL(url);
  target.searchParams.set("session_id", sessionId);
  target.searchParams.set("status", status);
  const link = document.getElementById("back");
  link.href = target.href;
  link.hidden = false;
  setTimeout(() => location.assign(target.href), 1500);
}

async function payPage() {
  const sessionId = decodeURIComponent(location.pathname.split("/").pop());
  const userId = sessionUser(sessionId);
  let session = await sessionStatus(sessionId);
  if (session === null) return say("This payment link is not valid.", "error");
  const p = session.payment;
  document.getElementById("amount").textContent = formatAmount(p.amount, p.currency, p.exponent) || "—";
  document.getElementById("payee").textContent = p.payee || "—";
  if (session.cancel_url) {
    const cancel = document.getElementById("cancel");
    const target = new URL(session.cancel_url);
    target.searchParams.set("session_id", sessionId);
    target.searchParams.set("status", "cancelled");
    cancel.href = target.href;
    cancel.hidden = false;
  }
  if (session.status !== "pending") {
    say(`This payment is ${session.status}.`, session.status === "verified" ? "ok" : "error");
    return backTo(session.return_url, sessionId, session.status);
  }
  const knowledge = session.required_factors.filter((f) => f !== "PASSKEY");
  const form = document.getElementById("answers");
  for (const factor of knowledge) form.querySelector(".factors").append(answerInput(factor));
  showSigned(session.passkey, p);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { session_id: sessionId, user_uuid: userId };
    try {
      body.factors = await digestsOf(form, userId, knowledge);
    } catch (error) {
      if (error instanceof AnswerError) return say(error.message, "error");
      throw error;
    }
    if (session.passkey) {
      try {
        body.passkey = await signWithPasskey(session.passkey.options);
      } catch {  // cancelled, or no passkey here: nothing was sent, nothing counted
        return say("The passkey did not sign: try again.", "error");
      }
    }
    const done = await post("/v1/verification/verify", body);
    if (done.status === 200) {
      say("Payment authorised.", "ok");
      return backTo(session.return_url, sessionId, "verified");
    }
    if (done.status === 401) {
      // Each attempt signs its own challenge: the next one comes with the session's status.
      session = (await sessionStatus(sessionId)) || session;
      showSigned(session.passkey, p);
      const left = done.body.attempts_remaining;
      say(`Verification failed. Attempts left: ${left}.`, "error");
      if (left === 0) backTo(session.return_url, sessionId, session.status);
      return;
    }
    if (done.status === 429) return say("Too many failed attempts: try again later.", "error");
    return say("The service could not check your answers now: try again shortly.", "error");
  });
}

function enrollPage() {
  const form = document.getElementById("enrollment");
  const user = form.elements.user_uuid;
  if (!user.value) user.value = crypto.randomUUID();
  const chosen = form.querySelector(".factors");
  for (const factor of KNOWLEDGE) chosen.append(answerInput(factor));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const named = KNOWLEDGE.filter((f) => form.elements[f].value !== "");
    if (named.length < 3) return say("Answer at least three factors.", "error");
    let factors;
    try {
      factors = await digestsOf(form, user.value, named);
    } catch (error) {
      if (error instanceof AnswerError) return say(error.message, "error");
      throw error;
    }
    const withPasskey = form.elements.passkey.checked;
    const done = await post("/v1/enrollment/store",
      { user_uuid: user.value, device_id: "browser", factors, register_passkey: withPasskey });
    if (done.status !== 201) return say(done.body.detail || "Enrollment failed.", "error");
    const enrolled = `Enrolled ${done.body.factor_count} factors`;
    if (!withPasskey) return say(`${enrolled}.`, "ok");
    let credential;
    try {
      credential = await createPasskey(done.body.passkey_options);
    } catch {
      return say(`${enrolled}; the passkey was not created.`, "error");
    }
    const added = await post("/v1/passkeys", { user_uuid: user.value, credential });
    if (added.status === 201) return say(`${enrolled} and a passkey.`, "ok");
    return say(`${enrolled}; the passkey was refused.`, "error");
  });
}

window.zeropay = { factorDigest, canonicalAnswer, sessionUser, formatAmount };
if (document.body.dataset.page === "pay") payPage();
if (document.body.dataset.page === "enroll") enrollPage();
