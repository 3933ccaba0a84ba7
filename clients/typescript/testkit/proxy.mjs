// A TCP proxy in front of the server: cutting it drops a client's connection (a network
// failure) while the server and the other clients stay up.

import net from "node:net";
import { once } from "node:events";

export class Proxy {
  static async start(targetPort) {
    const p = new Proxy(targetPort);
    p.server.listen(0, "127.0.0.1");
    await once(p.server, "listening");
    return p;
  }

  constructor(targetPort) {
    this.sockets = new Set();
    this.blocked = false;
    this.server = net.createServer((down) => {
      if (this.blocked) return down.destroy();
      const up = net.connect(targetPort, "127.0.0.1");
      for (const s of [down, up]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {});
      }
      down.pipe(up);
      up.pipe(down);
      down.on("close", () => up.destroy());
      up.on("close", () => down.destroy());
    });
  }

  get url() {
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  /** Drops every connection and refuses new ones until `unblock()`. */
  block() {
    this.blocked = true;
    for (const s of this.sockets) s.destroy();
  }

  unblock() {
    this.blocked = false;
  }

  async close() {
    this.block();
    this.server.close();
  }
}
