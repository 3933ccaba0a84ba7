// The connection banner: connecting, reconnecting or offline, and how many messages wait
// to be sent. Hidden while connected with nothing waiting.

import type { ConnectionState } from "livechat-client";
import { h } from "./dom";

export class ConnectionBanner {
  readonly el: HTMLElement;
  private state: ConnectionState = "idle";
  private pending = 0;

  constructor() {
    this.el = h("div", { class: "banner", role: "status", hidden: true });
    for (const ev of ["online", "offline"]) addEventListener(ev, () => this.update(this.state, this.pending));
  }

  update(state: ConnectionState, pending: number): void {
    this.state = state;
    this.pending = pending;
    const waiting = pending ? ` ${pending} message${pending > 1 ? "s" : ""} waiting to be sent.` : "";
    let text: string;
    if (!navigator.onLine && state !== "open") text = `You are offline.${waiting || " Messages you write will be sent when the connection returns."}`;
    else if (state === "connecting" || state === "syncing" || state === "idle") text = `Connecting…${waiting}`;
    else if (state === "reconnecting") text = `Connection lost, reconnecting…${waiting}`;
    else if (state === "closed") text = "Disconnected.";
    else text = pending ? `Sending…${waiting}` : "";
    this.el.dataset.state = navigator.onLine ? state : "offline";
    this.el.hidden = !text;
    this.el.textContent = text;
  }
}
