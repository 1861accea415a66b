/*!
 * lambdalake browser tracker (plain ES2017, no dependencies, no build step).
 * Served by the collector at GET /tracker.js.
 *
 *   <script src="http://127.0.0.1:8700/tracker.js"></script>
 *   <script>
 *     lambdalake.init({ writeKey: "local-write-key" });   // endpoint defaults to this script's origin
 *     lambdalake.page();
 *     lambdalake.track("add_to_cart", { product_id: "p1", quantity: 1, price: 9.5 });
 *     lambdalake.identify("user-42", { plan: "pro" });
 *   </script>
 *
 * Or let it initialise itself: <script src=".../tracker.js" data-write-key="..."></script>.
 *
 * Every event is written to localStorage before it is sent and removed only once the collector
 * has answered (or the browser has queued it with sendBeacon), so a closed tab, a crash or being
 * offline loses nothing: the next page load sends what is left. The stored queue is bounded; when
 * it overflows the oldest events go first and the loss is counted (lambdalake.stats().dropped).
 * A retried request may deliver an event twice; event_id is the dedupe key downstream.
 */
(function (global) {
  "use strict";

  var VERSION = "0.1.0";
  var EVENTS_PATH = "/v1/events";
  var MAX_REQUEST_EVENTS = 500; // the collector's per-request limit
  var BEACON_MAX_BYTES = 60000; // browsers queue at most 64 KiB of beacons at once
  var KEEPALIVE_MAX_BYTES = 60000; // same budget for fetch(keepalive)
  var DEFAULTS = {
    endpoint: null,
    writeKey: null,
    flushInterval: 1000, // ms an event waits before a batch goes out
    batchSize: 20,
    maxStoredEvents: 1000, // bound on the localStorage queue
    sessionTimeout: 30 * 60 * 1000, // ms of inactivity that starts a new session
    retryBase: 1000, // ms; exponential backoff with full jitter
    retryCap: 60000,
    storagePrefix: "lambdalake.",
    debug: false,
  };

  var config = null;
  var queue = []; // events not yet acknowledged, oldest first (mirrored in localStorage)
  var inFlight = {}; // event_id -> true while a request carries it
  var requests = []; // promises of requests in progress
  var timer = null;
  var attempt = 0; // consecutive failed attempts, for backoff
  var retryAt = 0; // no request before this time (ms since epoch)
  var counts = { queued: 0, sent: 0, accepted: 0, rejected: 0, dropped: 0, failures: 0, beacons: 0 };
  var memoryStore = {}; // when localStorage is unavailable (privacy modes, sandboxed iframes)

  // --- storage ------------------------------------------------------------------------------
  function storageGet(key) {
    try {
      return global.localStorage.getItem(config.storagePrefix + key);
    } catch (e) {
      return Object.prototype.hasOwnProperty.call(memoryStore, key) ? memoryStore[key] : null;
    }
  }

  function storageSet(key, value) {
    try {
      global.localStorage.setItem(config.storagePrefix + key, value);
    } catch (e) {
      memoryStore[key] = value; // quota exceeded or storage blocked: keep it for this page at least
    }
  }

  function storageRemove(key) {
    try {
      global.localStorage.removeItem(config.storagePrefix + key);
    } catch (e) {
      delete memoryStore[key];
    }
  }

  function persistQueue() {
    if (queue.length) storageSet("queue", JSON.stringify(queue));
    else storageRemove("queue");
  }

  function loadQueue() {
    var raw = storageGet("queue");
    if (!raw) return [];
    try {
      var stored = JSON.parse(raw);
      return Array.isArray(stored) ? stored.filter(function (e) { return e && e.event_id; }) : [];
    } catch (e) {
      return [];
    }
  }

  // --- ids and time ---------------------------------------------------------------------------
  function uuid() {
    var c = global.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    var bytes = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
    else for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  function anonymousId() {
    var id = storageGet("anonymous_id");
    if (!id) {
      id = uuid();
      storageSet("anonymous_id", id);
    }
    return id;
  }

  function sessionId(now) {
    var session = null;
    try {
      session = JSON.parse(storageGet("session") || "null");
    } catch (e) {
      session = null;
    }
    if (!session || !session.id || now - session.last > config.sessionTimeout) {
      session = { id: uuid(), started: now, last: now };
    }
    session.last = now;
    storageSet("session", JSON.stringify(session));
    return session.id;
  }

  // --- events -----------------------------------------------------------------------------------
  function pageContext() {
    var loc = global.location || {};
    var doc = global.document || {};
    return { url: loc.href, path: loc.pathname, referrer: doc.referrer || null, title: doc.title || null };
  }

  function context() {
    var nav = global.navigator || {};
    return {
      user_agent: nav.userAgent,
      locale: nav.language,
      page: pageContext(),
      library: { name: "lambdalake.js", version: VERSION },
    };
  }

  function enqueue(eventType, properties, userId) {
    if (!config) throw new Error("lambdalake: call lambdalake.init({writeKey}) first");
    if (typeof eventType !== "string" || !eventType) throw new Error("lambdalake: event type must be a non-empty string");
    var now = Date.now();
    var event = {
      event_id: uuid(),
      event_type: eventType,
      anonymous_id: anonymousId(),
      session_id: sessionId(now),
      ts: new Date(now).toISOString(),
      properties: Object.assign({}, properties || {}),
      context: context(),
    };
    var user = userId || storageGet("user_id");
    if (user) event.user_id = user;
    queue.push(event);
    counts.queued++;
    while (queue.length > config.maxStoredEvents) {
      var oldest = queue.shift();
      delete inFlight[oldest.event_id];
      counts.dropped++;
      log("queue full: dropped the oldest event", oldest.event_id);
    }
    persistQueue();
    schedule(queue.length >= config.batchSize ? 0 : config.flushInterval);
    return event.event_id;
  }

  function log() {
    if (config && config.debug && global.console) global.console.log.apply(global.console, ["[lambdalake]"].concat([].slice.call(arguments)));
  }

  // --- sending ----------------------------------------------------------------------------------
  function schedule(delay) {
    var wait = Math.max(delay, retryAt - Date.now(), 0);
    if (timer !== null) {
      if (delay > 0) return; // a flush is already due; don't push it back
      clearTimeout(timer);
    }
    timer = setTimeout(function () {
      timer = null;
      flush();
    }, wait);
  }

  function pending() {
    return queue.filter(function (e) { return !inFlight[e.event_id]; });
  }

  function acknowledge(ids) {
    var done = {};
    ids.forEach(function (id) {
      done[id] = true;
      delete inFlight[id];
    });
    queue = queue.filter(function (e) { return !done[e.event_id]; });
    persistQueue();
  }

  function release(ids) {
    ids.forEach(function (id) { delete inFlight[id]; });
  }

  function backoff(retryAfterSeconds) {
    attempt++;
    counts.failures++;
    var jittered = Math.random() * Math.min(config.retryCap, config.retryBase * Math.pow(2, attempt - 1));
    var wait = retryAfterSeconds > 0 ? Math.max(retryAfterSeconds * 1000, jittered) : jittered;
    retryAt = Date.now() + Math.min(wait, config.retryCap);
    schedule(retryAt - Date.now());
  }

  function eventsUrl(withKey) {
    var url = config.endpoint + EVENTS_PATH;
    return withKey ? url + "?writeKey=" + encodeURIComponent(config.writeKey) : url;
  }

  /** Send one batch of pending events; resolves when the request is settled (never rejects). */
  function flushOnce() {
    var batch = pending().slice(0, Math.min(config.batchSize, MAX_REQUEST_EVENTS));
    if (!batch.length) return Promise.resolve(false);
    if (global.navigator && global.navigator.onLine === false) {
      retryAt = 0; // the "online" listener sends as soon as the network is back
      return Promise.resolve(false);
    }
    var ids = batch.map(function (e) { return e.event_id; });
    ids.forEach(function (id) { inFlight[id] = true; });
    var body = JSON.stringify(batch);
    counts.sent += batch.length;
    var request = global
      .fetch(eventsUrl(false), {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + config.writeKey },
        body: body,
        keepalive: body.length <= KEEPALIVE_MAX_BYTES, // survives the page closing mid-request
        credentials: "omit",
        mode: "cors",
      })
      .then(function (response) {
        if (response.ok) {
          return response.json().then(
            function (result) { return result; },
            function () { return {}; }
          ).then(function (result) {
            var rejected = (result && result.errors) || [];
            counts.rejected += rejected.length;
            counts.accepted += batch.length - rejected.length;
            rejected.forEach(function (error) { log("rejected", batch[error.index], error.reasons); });
            acknowledge(ids);
            attempt = 0;
            retryAt = 0;
            return true;
          });
        }
        if (response.status === 429 || response.status === 408 || response.status >= 500) {
          release(ids);
          backoff(parseFloat(response.headers.get("Retry-After") || "0"));
          return false;
        }
        // 400/401/413/415: no retry can fix these; drop them rather than resend forever.
        counts.rejected += batch.length;
        log("collector refused a batch with HTTP", response.status);
        acknowledge(ids);
        return true;
      })
      .catch(function (error) {
        release(ids); // network error or offline: events stay stored, retried with backoff
        log("send failed", error && error.message);
        backoff(0);
        return false;
      });
    requests.push(request);
    return request.then(function (ok) {
      requests.splice(requests.indexOf(request), 1);
      return ok;
    });
  }

  /** Send everything pending now; resolves true once the queue is empty, false if a send failed. */
  function flush() {
    if (!config) return Promise.resolve(false);
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (Date.now() < retryAt) {
      schedule(retryAt - Date.now());
      return Promise.resolve(false);
    }
    return flushOnce().then(function (ok) {
      if (ok && pending().length) return flush();
      // Wait for requests other callers started, so "true" means everything was acknowledged.
      return Promise.all(requests.slice()).then(function () { return queue.length === 0; });
    });
  }

  /** On page hide: hand what is pending to the browser with sendBeacon (which cannot set headers). */
  function beacon() {
    if (!config || !global.navigator || typeof global.navigator.sendBeacon !== "function") return;
    // sendBeacon reports "queued", not "delivered": when offline or while the collector is failing
    // (in backoff), a beacon would likely be lost, so the events stay stored for the next visit.
    if (global.navigator.onLine === false || attempt > 0) return;
    var batch = pending();
    while (batch.length) {
      var chunk = [];
      var size = 2;
      while (batch.length && chunk.length < MAX_REQUEST_EVENTS) {
        var itemSize = JSON.stringify(batch[0]).length + 1;
        if (chunk.length && size + itemSize > BEACON_MAX_BYTES) break;
        chunk.push(batch.shift());
        size += itemSize;
      }
      // A string body is sent as text/plain: no CORS preflight, so the browser can send it after unload.
      if (!global.navigator.sendBeacon(eventsUrl(true), JSON.stringify(chunk))) break; // over budget: keep for next visit
      counts.beacons++;
      counts.sent += chunk.length;
      acknowledge(chunk.map(function (e) { return e.event_id; }));
    }
  }

  // --- public API -------------------------------------------------------------------------------
  function scriptOrigin() {
    var script = global.document && global.document.currentScript;
    if (!script || !script.src) return null;
    try {
      return new URL(script.src).origin;
    } catch (e) {
      return null;
    }
  }
  var defaultEndpoint = scriptOrigin();

  function init(options) {
    var opts = Object.assign({}, DEFAULTS, options || {});
    if (!opts.writeKey) throw new Error("lambdalake.init: writeKey is required");
    opts.endpoint = String(opts.endpoint || defaultEndpoint || "").replace(/\/+$/, "");
    if (!opts.endpoint) throw new Error("lambdalake.init: endpoint is required (the collector's URL)");
    opts.batchSize = Math.max(1, Math.min(MAX_REQUEST_EVENTS, opts.batchSize | 0));
    var first = config === null;
    config = opts;
    if (first) {
      queue = loadQueue(); // left over from earlier visits (offline, closed tab, failures)
      global.addEventListener("visibilitychange", function () {
        if (global.document.visibilityState === "hidden") beacon();
      });
      global.addEventListener("pagehide", beacon);
      global.addEventListener("online", function () {
        retryAt = 0;
        attempt = 0;
        flush();
      });
    }
    if (queue.length) schedule(0);
    return api;
  }

  function track(eventType, properties) {
    return enqueue(eventType, properties);
  }

  function page(properties) {
    return enqueue("page_view", Object.assign(pageContext(), properties || {}));
  }

  function identify(userId, traits) {
    if (typeof userId !== "string" || !userId) throw new Error("lambdalake.identify: userId must be a non-empty string");
    storageSet("user_id", userId);
    return enqueue("identify", { traits: Object.assign({}, traits || {}) }, userId);
  }

  /** Forget the user (logout): new anonymous id and session; unsent events are kept. */
  function reset() {
    storageRemove("user_id");
    storageRemove("anonymous_id");
    storageRemove("session");
  }

  var api = {
    VERSION: VERSION,
    init: init,
    track: track,
    page: page,
    identify: identify,
    flush: flush,
    reset: reset,
    anonymousId: function () { return config ? anonymousId() : null; },
    sessionId: function () { return config ? sessionId(Date.now()) : null; },
    pendingCount: function () { return queue.length; },
    stats: function () { return Object.assign({ pending: queue.length }, counts); },
  };
  global.lambdalake = api;

  var tag = global.document && global.document.currentScript;
  if (tag && tag.getAttribute("data-write-key")) {
    init({ writeKey: tag.getAttribute("data-write-key"), endpoint: tag.getAttribute("data-endpoint") || undefined });
  }
})(typeof window !== "undefined" ? window : this);
