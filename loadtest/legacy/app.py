"""A reconstruction of the seed "Live Chat API" (FastAPI + Celery) for side-by-side runs.

The original app's source is not available to this project; this file rebuilds it from the
seed behaviour that SPEC.md keeps compatible (one shared chat at ``/ws/chat`` without a token,
``message`` / ``typing`` / ``status_update`` events, the ``delivered`` / ``read`` booleans,
``GET /chat/history``, Celery e-mail notifications for offline users) and writes it the way
such a demo is usually written: SQLAlchemy async sessions, one commit per message, a
connection manager that awaits ``send_json`` for each socket in turn, and ``task.delay()``.
It is a benchmark target, not part of livechat; see BENCHMARKS.md ("versus the seed").

Run: ``loadtest/legacy/run.sh`` (creates the venv, the database and N users).
"""

import datetime as dt
import os

from celery import Celery
from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect
from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL = os.environ["LEGACY_DATABASE_URL"]  # postgresql+asyncpg://...
BROKER_URL = os.environ.get("LEGACY_BROKER_URL", "redis://127.0.0.1:6379/0")
# LEGACY_NO_CELERY=1: skip the notification job, the seed's best case (``delay()`` is a
# blocking Redis round trip inside the event loop and dominates its profile).
NOTIFY = os.environ.get("LEGACY_NO_CELERY") != "1"

engine = create_async_engine(DATABASE_URL, pool_size=20, max_overflow=0)
Session = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
celery = Celery("live_chat", broker=BROKER_URL)
app = FastAPI(title="Live Chat API")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    email: Mapped[str | None] = mapped_column(String(255))


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sender_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    content: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: dt.datetime.now(dt.timezone.utc)
    )
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    read: Mapped[bool] = mapped_column(Boolean, default=False)


@celery.task(name="notify_offline_users")
def notify_offline_users(message_id: int, sender_id: int, online: list[int]) -> int:
    """The seed's e-mail job: one mail per user not connected (here: counted, not sent)."""
    return message_id


class ConnectionManager:
    def __init__(self) -> None:
        self.active: dict[WebSocket, int | None] = {}

    async def connect(self, ws: WebSocket) -> None:
        await ws.accept()
        self.active[ws] = None

    def disconnect(self, ws: WebSocket) -> None:
        self.active.pop(ws, None)

    async def broadcast(self, data: dict, exclude: WebSocket | None = None) -> None:
        for ws in list(self.active):
            if ws is exclude:
                continue
            try:
                await ws.send_json(data)
            except Exception:
                self.disconnect(ws)


manager = ConnectionManager()


def message_event(m: Message) -> dict:
    return {
        "type": "message",
        "id": m.id,
        "sender_id": m.sender_id,
        "content": m.content,
        "timestamp": m.timestamp.isoformat(),
        "delivered": m.delivered,
        "read": m.read,
    }


@app.on_event("startup")
async def startup() -> None:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


@app.websocket("/ws/chat")
async def chat(ws: WebSocket) -> None:
    await manager.connect(ws)
    try:
        while True:
            data = await ws.receive_json()
            kind = data.get("type")
            if kind == "message":
                manager.active[ws] = data["sender_id"]
                async with Session() as db:
                    msg = Message(sender_id=data["sender_id"], content=data["content"])
                    db.add(msg)
                    await db.commit()
                await manager.broadcast(message_event(msg))
                if NOTIFY:
                    online = [u for u in manager.active.values() if u is not None]
                    notify_offline_users.delay(msg.id, msg.sender_id, online)
            elif kind == "typing":
                await manager.broadcast({"type": "typing", "user_id": data.get("user_id")}, exclude=ws)
            elif kind == "status_update":
                values = {k: True for k in ("delivered", "read") if data.get(k)}
                if values:
                    async with Session() as db:
                        await db.execute(update(Message).where(Message.id == data["message_id"]).values(**values))
                        await db.commit()
                await manager.broadcast({"type": "status_update", "message_id": data["message_id"], **values})
    except WebSocketDisconnect:
        manager.disconnect(ws)


@app.get("/chat/history")
async def history(limit: int = Query(50, ge=1, le=500)) -> list[dict]:
    async with Session() as db:
        rows = (await db.execute(select(Message).order_by(Message.id.desc()).limit(limit))).scalars()
        return [message_event(m) for m in rows]
