// SkyReels-V4 frontend: keyframe/mask timelines on the mask nodes, growing image sockets on the
// reference node, an in-node player (with sound) for saved and previewed clips, the audio
// loader's player, the name Load AV Latent lists a saved latent under, what a loaded take holds,
// and the notes of the Sampler and Refine.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  frameAtTime, planReferenceSockets, playerHeight, savedLatentName, snappedAway, takeSummary, timelineCells, viewUrl,
  withAudioPlayer,
} from "./skyreels_logic.js";

const MASK_NODES = new Set([
  "SkyReelsV4MaskT2V", "SkyReelsV4MaskI2V", "SkyReelsV4MaskExtend", "SkyReelsV4MaskContinue",
  "SkyReelsV4MaskInterpolate", "SkyReelsV4MaskKeyframes", "SkyReelsV4MaskEdit",
  "SkyReelsV4MaskVideoToAudio", "SkyReelsV4MaskKeepVideo",
]);
const TIMELINE_HEIGHT = 34;

function drawTimeline(ctx, timeline, width, y) {
  const cells = timelineCells(timeline);
  const margin = 10;
  const cell = (width - 2 * margin) / Math.max(1, cells.length);
  for (const { frame, known, requested, groupStart } of cells) {
    const x = margin + frame * cell;
    ctx.fillStyle = known ? "#4caf50" : "#3a3f4b";
    ctx.fillRect(x, y + 8, Math.max(1, cell - 1), 14);
    if (requested && !known) {
      ctx.strokeStyle = "#ff9800";
      ctx.strokeRect(x + 0.5, y + 8.5, Math.max(1, cell - 2), 13);
    }
    if (groupStart) {
      ctx.fillStyle = "#9aa0aa";
      ctx.fillRect(x, y + 24, 1, 5);
    }
  }
  const moved = snappedAway(timeline);
  ctx.fillStyle = "#c8ccd4";
  ctx.font = "10px sans-serif";
  const known = timeline.known_frames?.length ?? 0;
  const note = moved.length ? ` · snapped: ${moved.join(", ")}` : "";
  ctx.fillText(`${known}/${timeline.frames} frames kept · ${timeline.latent_frames} latent${note}`, margin, y + 6);
}

/** Calls `handle` (as the node) with the first item of `key` in each execution message. */
function whenExecuted(nodeType, key, handle) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    const items = message?.[key];
    if (items?.length) handle.call(this, items[0]);
  };
}

function addTimeline(nodeType) {
  whenExecuted(nodeType, "skyreels_timeline", function (timeline) {
    this.skyreelsTimeline = timeline;
    let widget = this.widgets?.find((w) => w.name === "skyreels_timeline");
    if (!widget) {
      widget = this.addCustomWidget({
        name: "skyreels_timeline",
        type: "skyreels_timeline",
        draw: (ctx, node, width, y) => node.skyreelsTimeline && drawTimeline(ctx, node.skyreelsTimeline, width, y),
        computeSize: (width) => [width, TIMELINE_HEIGHT],
        serialize: false,
      });
    }
    widget?.triggerDraw?.(); // Nodes 2.0 redraws a legacy widget only when asked (1.58)
    this.setDirtyCanvas(true, true);
  });
}

function addGrowingSockets(nodeType) {
  const sync = function () {
    const inputs = (this.inputs ?? []).map((input, i) => ({ name: input.name, linked: this.isInputConnected(i) }));
    const { add, remove } = planReferenceSockets(inputs);
    for (const name of remove) this.removeInput(this.inputs.findIndex((input) => input.name === name));
    for (const name of add) this.addInput(name, "IMAGE");
  };
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    onNodeCreated?.apply(this, arguments);
    sync.call(this);
  };
  const onConnectionsChange = nodeType.prototype.onConnectionsChange;
  nodeType.prototype.onConnectionsChange = function () {
    onConnectionsChange?.apply(this, arguments);
    sync.call(this);
  };
}

function addPlayer(nodeType) {
  whenExecuted(nodeType, "skyreels_videos", function (saved) {
    if (!this.skyreelsPlayer) {
      const video = document.createElement("video");
      video.controls = true;
      video.loop = true;
      video.style.width = "100%";
      const label = document.createElement("div");
      label.style.font = "11px sans-serif";
      const box = document.createElement("div");
      box.append(video, label);
      video.addEventListener("timeupdate", () => {
        const frame = frameAtTime(video.currentTime, this.skyreelsSaved.frame_rate, this.skyreelsSaved.frame_count);
        label.textContent = `frame ${frame + 1} / ${this.skyreelsSaved.frame_count}`;
      });
      const widget = this.addDOMWidget("skyreels_player", "skyreels_player", box, { serialize: false });
      widget.serialize = false; // the option keeps it out of the prompt, this out of the workflow
      widget.computeSize = (width) => [width, playerHeight(width, video.videoWidth, video.videoHeight) + 16];
      video.addEventListener("loadedmetadata", () => {
        this.setSize([this.size[0], this.computeSize([this.size[0], 0])[1]]);
        this.setDirtyCanvas(true, true);
      });
      this.skyreelsPlayer = video;
    }
    this.skyreelsSaved = saved;
    this.skyreelsPlayer.src = api.apiURL(viewUrl(saved, Math.random()).replace(/^\/api/, ""));
  });
  const collapse = nodeType.prototype.collapse;
  nodeType.prototype.collapse = function () {
    const result = collapse?.apply(this, arguments);
    if (this.flags?.collapsed) this.skyreelsPlayer?.pause(); // a looping clip played on unseen
    return result;
  };
}

/** A text line under the node, set from each execution's `key` item by `describe`; not added
 * until there is something to say. The DOM widgets' types are the pack's own: Nodes 2.0 renders a
 * type it knows ("text", ...) as its own input. */
function addLine(nodeType, key, describe) {
  whenExecuted(nodeType, key, function (item) {
    const text = describe(item);
    if (!this.skyreelsLine && !text) return;
    if (!this.skyreelsLine) {
      const line = document.createElement("div");
      line.style.font = "11px sans-serif";
      line.style.wordBreak = "break-all";
      const widget = this.addDOMWidget("skyreels_line", "skyreels_line", line, { serialize: false });
      widget.serialize = false;
      this.skyreelsLine = line;
    }
    this.skyreelsLine.textContent = text;
    this.setDirtyCanvas(true, true);
  });
}

app.registerExtension({
  name: "SkyReelsV4.Frontend",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (MASK_NODES.has(nodeData.name)) addTimeline(nodeType);
    if (nodeData.name === "SkyReelsV4ImageReferences") addGrowingSockets(nodeType);
    if (["SkyReelsV4SaveVideo", "SkyReelsV4PreviewVideo"].includes(nodeData.name)) addPlayer(nodeType);
    if (nodeData.name === "SkyReelsV4SaveAVLatent") {
      addLine(nodeType, "skyreels_latents", (saved) => `saved: ${savedLatentName(saved)} (Load AV Latent lists it after R)`);
    }
    if (nodeData.name === "SkyReelsV4LoadAVLatent") addLine(nodeType, "skyreels_take", takeSummary);
    if (["SkyReelsV4Sampler", "SkyReelsV4Refine"].includes(nodeData.name)) {
      addLine(nodeType, "skyreels_note", (note) => note);
    }
    if (nodeData.name === "SkyReelsV4LoadAudio") {
      nodeData.input.required = withAudioPlayer(nodeData.input.required);
    }
  },
  /** Outputs the host restores (a workflow tab switched back to): the pack's players, timelines
   * and lines are drawn from them again, as the host redraws its own image previews. */
  onNodeOutputsUpdated(outputs) {
    for (const [id, output] of Object.entries(outputs ?? {})) {
      if (!Object.keys(output ?? {}).some((key) => key.startsWith("skyreels_"))) continue;
      app.graph?.getNodeById(id)?.onExecuted?.(output);
    }
  },
});
