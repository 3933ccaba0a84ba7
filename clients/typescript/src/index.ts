export { LivechatClient, type ClientOptions } from "./client.js";
export { LivechatError, type LivechatErrorCode } from "./errors.js";
export { MemoryPositionStore, LocalStoragePositionStore, type PositionStore } from "./positions.js";
export type * from "./types.js";
