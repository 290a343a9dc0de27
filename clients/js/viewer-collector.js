// Reference viewer-experience collector for an HTML5 <video> element (docs/clients.md).
//
//   import { collectViewerStats } from './viewer-collector.js';
//   const collector = collectViewerStats(video, { socket, streamId });
//   hls.on(Hls.Events.LEVEL_SWITCHED, (_, { level }) => {
//     const { bitrate, width, height } = hls.levels[level];
//     collector.renditionChanged({ bitrate: bitrate / 1000, width, height });
//   });
//   // when the viewer leaves: collector.stop();
//
// It sends `stream:viewer:stats` every `interval` ms while the view lasts and once at its end,
// with cumulative counters (docs/protocol.md), so a lost beacon costs nothing. It listens to the
// element's play/playing/waiting/pause/seeking/ended/error events, uses requestVideoFrameCallback
// (or getVideoPlaybackQuality) to see the first frame, and counts a rendition change when the
// player says so (renditionChanged) or, without a player, when the decoded size changes.

const EVENT = 'stream:viewer:stats';
const ACK_TIMEOUT_MS = 10000;
// The final beacon is the one that says how the view ended: resend it a few times.
const FINAL_ATTEMPTS = 3;

const MEDIA_ERRORS = {
  1: 'MEDIA_ERR_ABORTED',
  2: 'MEDIA_ERR_NETWORK',
  3: 'MEDIA_ERR_DECODE',
  4: 'MEDIA_ERR_SRC_NOT_SUPPORTED',
};

export function collectViewerStats(video, options) {
  const {
    socket,
    streamId,
    viewId = crypto.randomUUID(),
    interval = 10000,
    bitrate = null, // kbps of the rendition playing, when the player knows it
    onBeacon = () => {},
  } = options;

  const now = () => performance.now();
  let state = 'starting';
  let playRequestedAt = video.paused && !video.autoplay ? null : now();
  let startupTime = null;
  let watchTime = 0;
  let stallCount = 0;
  let stallDuration = 0;
  let up = 0;
  let down = 0;
  let rendition = { bitrate, width: null, height: null };
  let error = null;
  let since = now(); // when the current state began (for watch and stall time)
  let lastStamp = 0;
  let timer = null;
  let finished = false;

  // Time spent in the current state counts towards its total when the state changes or a
  // beacon is sent.
  function settle() {
    const t = now();
    if (state === 'playing') watchTime += t - since;
    if (state === 'stalled') stallDuration += t - since;
    since = t;
  }

  function enter(next) {
    if (finished || next === state) return;
    settle();
    state = next;
  }

  function firstFrame() {
    if (startupTime !== null) return;
    const t = now();
    startupTime = Math.round(t - (playRequestedAt ?? t));
    if (state === 'starting') enter('playing');
  }

  function timestamp() {
    // Strictly increasing per view: (viewId, timestamp) is the beacon's key.
    lastStamp = Math.max(Date.now(), lastStamp + 1);
    return new Date(lastStamp).toISOString();
  }

  function beacon() {
    settle();
    const body = {
      streamId,
      viewId,
      timestamp: timestamp(),
      state,
      startupTime,
      watchTime: Math.round(watchTime),
      stalls: { count: stallCount, duration: Math.round(stallDuration) },
      renditionChanges: { up, down },
      bitrate: rendition.bitrate,
      resolution: { width: rendition.width, height: rendition.height },
    };
    if (error) body.error = error;
    return body;
  }

  function send(body, attempts = 1) {
    socket.timeout(ACK_TIMEOUT_MS).emit(EVENT, body, (err, ack) => {
      onBeacon(body, err ? { ok: false, error: { code: 'timeout' } } : ack);
      const retry = err || (ack && !ack.ok && ['unavailable', 'overloaded'].includes(ack.error.code));
      if (retry && attempts > 1) setTimeout(() => send(body, attempts - 1), 1000);
    });
  }

  function watchFrames() {
    if (typeof video.requestVideoFrameCallback === 'function') {
      video.requestVideoFrameCallback(() => firstFrame());
    }
  }

  function sized() {
    const width = video.videoWidth || null;
    const height = video.videoHeight || null;
    if (!width || !height) return;
    if (rendition.height && !playerReportsRenditions) {
      if (height > rendition.height) up += 1;
      else if (height < rendition.height) down += 1;
    }
    rendition = { ...rendition, width, height };
  }

  let playerReportsRenditions = false;
  let seeking = false;

  const listeners = {
    play() {
      if (playRequestedAt === null) playRequestedAt = now();
      watchFrames();
    },
    playing() {
      const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      if (startupTime === null && (video.currentTime > 0 || (quality && quality.totalVideoFrames > 0))) {
        firstFrame();
      }
      if (startupTime !== null) enter('playing');
    },
    timeupdate() {
      // Some players start without a frame callback: the playhead moving is the first frame.
      if (startupTime === null && video.currentTime > 0) firstFrame();
    },
    waiting() {
      // Waiting before the first frame is startup, and after a seek it is the seek: neither is
      // a stall (as Mux counts rebuffering).
      if (startupTime === null || seeking) return;
      if (state !== 'stalled') {
        stallCount += 1;
        enter('stalled');
      }
    },
    seeking() {
      seeking = true;
    },
    seeked() {
      seeking = false;
    },
    pause() {
      if (!video.ended && startupTime !== null) enter('paused');
    },
    resize: sized,
    loadedmetadata: sized,
    ended() {
      finish('ended');
    },
    error() {
      const code = video.error ? MEDIA_ERRORS[video.error.code] || `MEDIA_ERR_${video.error.code}` : 'MEDIA_ERR';
      error = { code, message: (video.error && video.error.message) || '' };
      finish('failed');
    },
  };
  for (const [name, listener] of Object.entries(listeners)) video.addEventListener(name, listener);
  if (playRequestedAt !== null) watchFrames();
  sized();

  timer = setInterval(() => send(beacon()), interval);

  function finish(how) {
    if (finished) return;
    enter(how);
    finished = true;
    clearInterval(timer);
    for (const [name, listener] of Object.entries(listeners)) video.removeEventListener(name, listener);
    send(beacon(), FINAL_ATTEMPTS);
  }

  return {
    viewId,
    /** The player switched renditions (hls.js LEVEL_SWITCHED, dash.js QUALITY_CHANGE_RENDERED). */
    renditionChanged({ bitrate: kbps = rendition.bitrate, width, height }) {
      playerReportsRenditions = true;
      if (rendition.bitrate !== null && kbps !== null && kbps !== rendition.bitrate) {
        if (kbps > rendition.bitrate) up += 1;
        else down += 1;
      }
      rendition = { bitrate: kbps, width: width ?? rendition.width, height: height ?? rendition.height };
    },
    /** The viewer left (page hidden, component unmounted): sends the final beacon. */
    stop() {
      finish('ended');
    },
    /** What the next beacon would say (for a page that shows it). */
    snapshot: beacon,
  };
}
