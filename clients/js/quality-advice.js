// Applies stream-stats quality advice (`stream:quality:advice`, docs/protocol.md) to the
// RTCRtpSender of an outgoing video track, in the browser. Plain ES module, no dependencies:
//
//   import { io } from "socket.io-client";
//   import { applyQualityAdvice } from "./quality-advice.js";
//   const socket = io(url, { auth: { token } });
//   const advice = applyQualityAdvice(socket, videoSender, { streamId });
//   ...
//   advice.stop();
//
// For each advice about `streamId` it sets, on every encoding of the sender, `maxBitrate` (the
// target bitrate), `scaleResolutionDownBy` (the source height over the target height, never
// below 1) and `maxFramerate` (the target fps), through `setParameters`. It then reports what it
// applied: to `onApplied(report)` and, unless `report: false`, to the server as
// `stream:quality:applied { streamId, adviceId, applied }`. A failed `setParameters` is reported
// to `onError(error, advice)` and changes nothing.

export const ADVICE_EVENT = "stream:quality:advice";
export const APPLIED_EVENT = "stream:quality:applied";

/**
 * Listen for advice on `socket` and apply it to `sender`. Returns `{ stop, last }`: `stop()`
 * stops listening, `last()` is the last report (or null).
 */
export function applyQualityAdvice(socket, sender, options = {}) {
  const { streamId, onApplied = () => {}, onError = () => {}, report = true } = options;
  let last = null;
  // Advice is applied one at a time, in the order it arrived.
  let queue = Promise.resolve();

  function handle(advice) {
    if (!advice || (streamId && advice.streamId !== streamId)) return;
    queue = queue.then(async () => {
      try {
        const applied = await applyAdvice(sender, advice);
        last = { streamId: advice.streamId, adviceId: advice.adviceId, action: advice.action, applied };
        if (report) {
          socket.emit(APPLIED_EVENT, {
            streamId: advice.streamId,
            adviceId: advice.adviceId,
            applied,
          });
        }
        onApplied(last);
      } catch (error) {
        onError(error, advice);
      }
    });
  }

  socket.on(ADVICE_EVENT, handle);
  return {
    stop() {
      socket.off(ADVICE_EVENT, handle);
    },
    last() {
      return last;
    },
  };
}

/**
 * Apply one advice to `sender` now; resolves to what was set:
 * `{ maxBitrate (bps), scaleResolutionDownBy, maxFramerate }` (a field is null when the advice
 * or the source does not give it).
 */
export async function applyAdvice(sender, advice) {
  const target = advice.target || {};
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
  const source = sender.track && sender.track.getSettings ? sender.track.getSettings() : {};
  const maxBitrate = Number.isFinite(target.bitrate) ? Math.round(target.bitrate * 1000) : null;
  const scale =
    Number.isFinite(target.height) && target.height > 0 && Number.isFinite(source.height)
      ? Math.max(1, source.height / target.height)
      : null;
  const maxFramerate = Number.isFinite(target.fps) && target.fps > 0 ? target.fps : null;
  for (const encoding of params.encodings) {
    if (maxBitrate !== null) encoding.maxBitrate = maxBitrate;
    if (scale !== null) encoding.scaleResolutionDownBy = scale;
    if (maxFramerate !== null) encoding.maxFramerate = maxFramerate;
  }
  await sender.setParameters(params);
  return { maxBitrate, scaleResolutionDownBy: scale, maxFramerate };
}
