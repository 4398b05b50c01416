// Pure helpers of the SkyReels-V4 frontend (no DOM, no ComfyUI), tested with node --test.

export const MAX_IMAGE_REFERENCES = 9;
export const TEMPORAL_STRIDE = 4;

/** The latent frame holding pixel `frame`: frame 0 alone, then groups of 4 (1 + 4k frames). */
export function latentIndexOfFrame(frame, stride = TEMPORAL_STRIDE) {
  return Math.floor((frame + stride - 1) / stride);
}

/** One cell per pixel frame: known after snapping, asked for by the user, first of its latent group. */
export function timelineCells({ frames, known_frames = [], requested_frames = [] }) {
  const known = new Set(known_frames);
  const requested = new Set(requested_frames);
  return Array.from({ length: frames }, (_, frame) => ({
    frame,
    known: known.has(frame),
    requested: requested.has(frame),
    groupStart: frame === 0 || (frame - 1) % TEMPORAL_STRIDE === 0,
    latent: latentIndexOfFrame(frame),
  }));
}

/** Requested frames that were not kept as asked (they moved to their latent group). */
export function snappedAway(timeline) {
  const known = new Set(timeline.known_frames ?? []);
  return (timeline.requested_frames ?? []).filter((frame) => !known.has(frame));
}

/** Which image_N sockets to add or remove so exactly one empty socket follows the last linked one. */
export function planReferenceSockets(inputs, max = MAX_IMAGE_REFERENCES) {
  const images = inputs
    .filter((input) => /^image_\d+$/.test(input.name))
    .map((input) => ({ ...input, index: Number(input.name.slice(6)) }))
    .sort((a, b) => a.index - b.index);
  const lastLinked = images.reduce((last, input) => (input.linked ? input.index : last), 0);
  const wanted = Math.min(max, lastLinked + 1);
  const present = new Set(images.map((input) => input.index));
  const add = [];
  for (let index = 1; index <= wanted; index += 1) {
    if (!present.has(index)) add.push(`image_${index}`);
  }
  const remove = images.filter((input) => input.index > wanted && !input.linked).map((input) => input.name);
  return { add, remove };
}

/** The server URL that streams a saved output file; `rand` makes each showing a new URL, as the
 * host's previews do: the temp folder is emptied when the server starts, so a preview's name comes
 * round again and the browser would play the old clip from its cache. */
export function viewUrl({ filename, subfolder = "", type = "output" }, rand) {
  const query = new URLSearchParams({ filename, subfolder, type });
  if (rand !== undefined) query.set("rand", String(rand));
  return `/api/view?${query.toString()}`;
}

/** Frame index shown at a playback time (for the player's frame counter). */
export function frameAtTime(seconds, frameRate, frameCount) {
  return Math.max(0, Math.min(frameCount - 1, Math.floor(seconds * frameRate + 1e-6)));
}

/** Height of the in-node player for a node `width` wide, keeping the clip's aspect (+ controls bar). */
export function playerHeight(width, videoWidth, videoHeight, controls = 24) {
  if (!(videoWidth > 0 && videoHeight > 0)) return width * (9 / 16) + controls;
  return Math.round((width * videoHeight) / videoWidth) + controls;
}

/**
 * The audio loader's required inputs with the host's audio player (`audioUI`) right after the
 * `audio` combo. ComfyUI adds the player only to its own audio nodes, yet its upload button (added
 * to any combo named `audio` with `audio_upload`) needs the player to exist first: without it the
 * node throws while being created.
 */
export function withAudioPlayer(required) {
  const { audio, audioUI = ["AUDIO_UI", {}], ...rest } = required;
  return { audio, audioUI, ...rest };
}

/** The Load AV Latent list's name for a file Save AV Latent wrote: its path in the output folder, marked. */
export function savedLatentName({ filename, subfolder = "" }) {
  return `${subfolder ? `${subfolder}/` : ""}${filename} [output]`;
}

/** One line about a loaded take: its length, rate, latent size, sound and keyframes. */
export function takeSummary({ frames, fps, latent_size: [height, width], sound, keyframes }) {
  const parts = [`${frames} frames at ${fps} fps`, `latent ${height}×${width}`, sound ? "with sound" : "silent"];
  if (keyframes) parts.push(`${keyframes} high-res keyframes`);
  return parts.join(" · ");
}
