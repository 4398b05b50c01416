import assert from "node:assert/strict";
import { test } from "node:test";
import {
  frameAtTime, latentIndexOfFrame, planReferenceSockets, playerHeight, savedLatentName, snappedAway, takeSummary, timelineCells,
  viewUrl, withAudioPlayer,
} from "../skyreels_logic.js";

test("latent groups: frame 0 alone, then four frames each", () => {
  assert.deepEqual([0, 1, 4, 5, 8, 16].map((f) => latentIndexOfFrame(f)), [0, 1, 1, 2, 2, 4]);
});

test("timeline marks known, requested and latent group starts", () => {
  const cells = timelineCells({ frames: 9, known_frames: [0, 5, 6, 7, 8], requested_frames: [0, 6] });
  assert.equal(cells.length, 9);
  assert.deepEqual(cells.filter((c) => c.known).map((c) => c.frame), [0, 5, 6, 7, 8]);
  assert.deepEqual(cells.filter((c) => c.groupStart).map((c) => c.frame), [0, 1, 5]);
  assert.deepEqual(cells.filter((c) => c.requested).map((c) => c.frame), [0, 6]);
  assert.deepEqual(snappedAway({ known_frames: [0, 13, 14, 15, 16], requested_frames: [0, 15, 20] }), [20]);
});

test("reference sockets grow to one empty after the last linked and shrink back", () => {
  assert.deepEqual(planReferenceSockets([{ name: "image_1", linked: true }]), { add: ["image_2"], remove: [] });
  const all = Array.from({ length: 9 }, (_, i) => ({ name: `image_${i + 1}`, linked: false }));
  assert.deepEqual(planReferenceSockets(all), {
    add: [], remove: ["image_2", "image_3", "image_4", "image_5", "image_6", "image_7", "image_8", "image_9"],
  });
  const full = all.map((input) => ({ ...input, linked: true }));
  assert.deepEqual(planReferenceSockets(full), { add: [], remove: [] });
  const gap = [{ name: "image_1", linked: true }, { name: "image_2", linked: false }, { name: "image_3", linked: true }];
  assert.deepEqual(planReferenceSockets(gap), { add: ["image_4"], remove: [] });
});

test("player helpers", () => {
  assert.equal(viewUrl({ filename: "a b.mp4", subfolder: "skyreels_v4" }), "/api/view?filename=a+b.mp4&subfolder=skyreels_v4&type=output");
  assert.equal(viewUrl({ filename: "p.mp4", type: "temp" }, 0.5), "/api/view?filename=p.mp4&subfolder=&type=temp&rand=0.5");
  assert.equal(frameAtTime(0, 16, 33), 0);
  assert.equal(frameAtTime(1.0, 16, 33), 16);
  assert.equal(frameAtTime(99, 16, 33), 32);
});

test("player keeps the clip's aspect", () => {
  assert.equal(playerHeight(320, 640, 360), 204);
  assert.equal(playerHeight(320, 0, 0), 204);
  assert.equal(playerHeight(200, 100, 100, 0), 200);
});

test("the audio loader gets the host's player before its upload button, once", () => {
  const combo = [["voice.wav"], { audio_upload: true }];
  const upload = ["AUDIOUPLOAD", {}];
  const withPlayer = withAudioPlayer({ audio: combo, upload });
  assert.deepEqual(Object.keys(withPlayer), ["audio", "audioUI", "upload"]);
  assert.deepEqual(withPlayer.audioUI, ["AUDIO_UI", {}]);
  assert.equal(withPlayer.audio, combo);
  assert.deepEqual(Object.keys(withAudioPlayer({ audio: combo })), ["audio", "audioUI"]);
  assert.deepEqual(withAudioPlayer(withPlayer), withPlayer);
});

test("a saved latent is named as Load AV Latent lists it", () => {
  assert.equal(savedLatentName({ filename: "take_00001.av_latent.safetensors", subfolder: "latents" }),
    "latents/take_00001.av_latent.safetensors [output]");
  assert.equal(savedLatentName({ filename: "a.av_latent.safetensors", subfolder: "" }), "a.av_latent.safetensors [output]");
});

test("a loaded take is summed up in one line", () => {
  assert.equal(takeSummary({ frames: 17, fps: 16, latent_size: [8, 8], sound: true, keyframes: 2 }),
    "17 frames at 16 fps · latent 8×8 · with sound · 2 high-res keyframes");
  assert.equal(takeSummary({ frames: 33, fps: 24, latent_size: [6, 10], sound: false, keyframes: 0 }),
    "33 frames at 24 fps · latent 6×10 · silent");
});
