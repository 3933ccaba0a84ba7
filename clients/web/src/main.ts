// The livechat page: signs in, connects the SDK and wires its events to the parts of the page.

import { LivechatClient, LocalStoragePositionStore, type Room } from "livechat-client";
import { currentSession, devTokenSource, type Session, signInView, signOut } from "./auth";
import { ConnectionBanner } from "./banner";
import { Composer } from "./composer";
import { errorText, fill, h } from "./dom";
import { Directory, MembersPanel } from "./members";
import { RoomList } from "./rooms";
import { SearchBox } from "./search";
import { Timeline } from "./timeline";
import { TypingIndicator } from "./typing";

const OPEN_ROOM_KEY = "livechat.room";
const app = document.getElementById("app") as HTMLElement;

function boot(): void {
  const session = currentSession();
  if (session) void start(session);
  else fill(app, signInView((s) => void start(s)));
}

async function start(session: Session): Promise<void> {
  const me = session.userId;
  const client: LivechatClient = new LivechatClient({
    url: location.origin,
    // A dev session renews its token; a token from the fragment is fixed, so the SDK gives up
    // (and the page says so) once the server refuses it.
    token: session.username
      ? devTokenSource({ ...session, username: session.username }, (): boolean => client.state === "reconnecting")
      : session.token,
    // Positions per user: another user signing in on this browser starts from their own.
    positions: new LocalStoragePositionStore(`livechat.positions.${me}`),
  });
  const dir = new Directory();
  if (session.username) dir.learn(me, session.username);

  const banner = new ConnectionBanner();
  const typing = new TypingIndicator(dir);
  const whoami = h("span", { class: "whoami" });
  const showWho = () => (whoami.textContent = `Signed in as ${dir.name(me)} (#${me})`);
  const roomsToggle = toggle("rooms", "Rooms");
  const membersToggle = toggle("members", "Members");
  let seenNames = -1;

  const timeline = new Timeline(client, dir, me, {
    read: (roomId) => rooms.markRead(roomId),
    reply: (item) => composer.setReply(item),
    spoke: (roomId, userId) => typing.stop(roomId, userId),
    pendingChanged: () => banner.update(client.state, client.pending()),
    unknownSender: () => members.reload(),
  });
  const members = new MembersPanel(client, dir, me, () => {
    timeline.seenBy(members.all());
    timeline.membersLoaded();
    if (seenNames !== dir.version) {
      seenNames = dir.version;
      timeline.refresh();
      showWho();
    }
  });
  const rooms = new RoomList(
    client,
    me,
    (room) => openRoom(room),
    () => timeline.roomId !== null && timeline.reading(timeline.roomId),
    (unread) => {
      document.title = unread ? `(${unread}) livechat` : "livechat";
      roomsToggle.querySelector(".badge")?.remove();
      if (unread) roomsToggle.append(h("span", { class: "badge unread-badge" }, h("span", { class: "sr-only" }, "unread: "), unread > 999 ? "999+" : String(unread)));
    },
  );
  const composer = new Composer(client, dir, me, timeline, () => members.all());
  // A chosen result opens its room; focus goes to the room's title, where reading starts.
  const search = new SearchBox(client, (id) => rooms.get(id), () => timeline.roomId, (room) => {
    openRoom(room);
    timeline.title.focus();
  });

  const signOutButton = h("button", { type: "button", class: "signout" }, "Sign out");
  signOutButton.addEventListener("click", () => {
    client.close();
    signOut();
    location.reload();
  });
  showWho();
  fill(
    app,
    h("a", { class: "skip", href: "#composer-input" }, "Skip to the message box"),
    h("header", { class: "top" }, roomsToggle, h("h1", {}, "livechat"), search.el, whoami, signOutButton),
    banner.el,
    h(
      "div",
      { class: "layout" },
      rooms.el,
      h("main", { class: "room", id: "main" }, h("div", { class: "room-head" }, timeline.title, membersToggle), timeline.el, typing.el, composer.el),
      members.el,
    ),
  );

  function openRoom(room: Room): void {
    sessionStorage.setItem(OPEN_ROOM_KEY, String(room.id));
    rooms.setOpen(room.id);
    typing.setRoom(room.id);
    composer.setRoom(room.id, room.name);
    document.body.classList.remove("show-rooms", "show-members");
    roomsToggle.setAttribute("aria-expanded", "false");
    membersToggle.setAttribute("aria-expanded", "false");
    void members.open(room.id);
    void timeline.open(room);
  }

  client.on("event", (ev) => {
    rooms.onEvent(ev);
    timeline.onEvent(ev);
    if (ev.type !== "member" || ev.room_id !== timeline.roomId) return;
    if (ev.user_id === me && ev.action === "leave") {
      const next = rooms.first();
      if (next && next.id !== ev.room_id) openRoom(next);
    } else {
      members.reload();
    }
  });
  client.on("typing", (ev) => typing.onTyping(ev));
  client.on("presence", (ev) => members.onPresence(ev));
  client.on("status_update", (ev) => {
    if (ev.room_id === timeline.roomId && ev.user_id !== me) members.reload();
    // I read a room in another tab or device: its badge here is stale.
    if (ev.user_id === me && ev.read && ev.room_id !== timeline.roomId) rooms.reload();
  });
  client.on("state", (state) => {
    banner.update(state, client.pending());
    // Back after a drop: rooms joined or read elsewhere meanwhile.
    if (state === "open") rooms.reload();
  });
  client.on("error", (ev) => {
    if (ev.code === "unauthorized") expired();
  });

  function expired(): void {
    client.close();
    signOut();
    fill(app, h("p", { class: "error", role: "alert" }, "Your session has expired. Sign in again."), signInView((s) => void start(s)));
  }

  banner.update(client.state, 0);
  const roomsLoaded = rooms.load();
  try {
    await client.connect();
  } catch (e) {
    if ((e as { code?: string }).code === "unauthorized") return expired();
    banner.el.hidden = false;
    banner.el.textContent = `Could not connect: ${errorText(e)}`;
    return;
  }
  await roomsLoaded;
  const saved = rooms.get(Number(sessionStorage.getItem(OPEN_ROOM_KEY)));
  const first = saved ?? rooms.first();
  if (first) openRoom(first);
}

/** A button that shows or hides a side panel on narrow screens. */
function toggle(panel: "rooms" | "members", label: string): HTMLButtonElement {
  const button = h("button", { type: "button", class: `toggle toggle-${panel}`, "aria-controls": panel, "aria-expanded": "false" }, label);
  button.addEventListener("click", () => {
    const shown = document.body.classList.toggle(`show-${panel}`);
    button.setAttribute("aria-expanded", String(shown));
    if (shown) document.getElementById(panel)?.querySelector<HTMLElement>("button, input")?.focus();
  });
  // Escape closes an open panel and gives focus back to its button.
  addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || !document.body.classList.contains(`show-${panel}`)) return;
    document.body.classList.remove(`show-${panel}`);
    button.setAttribute("aria-expanded", "false");
    button.focus();
  });
  return button;
}

boot();
