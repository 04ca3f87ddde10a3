"""End-to-end encryption between real clients, with matrix-nio (vodozemac).

Run by `crates/myelin/tests/real_clients.rs` against a Myelin on loopback:

    python nio_e2ee.py <homeserver URL> <alice's user id> <alice's password>
                       <bob's user id> <bob's password>

1. Alice and Bob, each on a fresh device, share an encrypted room and each
   decrypts the other's message (device keys, one-time key claims, olm
   to-device messages, megolm room keys).
2. Alice logs in on a second device. Her first device and Bob see it through
   `device_lists.changed`. The new device asks for the keys of the messages
   sent before it existed (`m.room_key_request`), her first device forwards
   them over a new olm session (a one-time key claim), and the new device
   decrypts the old messages.
3. Bob's next message reaches the new device directly.

Exits non-zero, with the reason, on the first thing that does not work.
"""

import asyncio
import logging
import os
import sys
import tempfile

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomKeyRequestResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)
from nio.exceptions import EncryptionError

if os.environ.get("NIO_E2EE_DEBUG"):
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("peewee").setLevel(logging.WARNING)

HOMESERVER, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD = sys.argv[1:6]
# Steps (each a sync of at most a second) a phase may take.
STEPS = 30
# Initial syncs see the whole (short) history of the room.
SYNC_FILTER = {"room": {"timeline": {"limit": 50}}}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def log(message):
    print(f"nio_e2ee: {message}", flush=True)


async def login(user_id, password, device_name, store):
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(HOMESERVER, user_id, store_path=store, config=config)
    response = await client.login(password, device_name=device_name)
    check(isinstance(response, LoginResponse), f"login of {user_id}: {response}")
    log(f"{user_id} logged in as {client.device_id}")
    return client


class Timeline:
    """The room events a client has seen, decrypted where it could."""

    def __init__(self):
        self.events = []

    def texts(self):
        return [e.body for e in self.events if isinstance(e, RoomMessageText)]

    def undecrypted(self):
        return [e for e in self.events if isinstance(e, MegolmEvent)]


async def step(client, timeline, timeout=1000):
    """One sync, then the key traffic a client does between syncs."""
    response = await client.sync(timeout=timeout, sync_filter=SYNC_FILTER)
    check(isinstance(response, SyncResponse), f"sync of {client.user_id}: {response}")
    for room in response.rooms.join.values():
        timeline.events.extend(room.timeline.events)
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
        # Key requests waiting for this olm session are answered when a sync
        # is handled, but nio skips a sync whose token has not moved (an
        # idle server's answer): answer them now.
        client.olm.collect_key_requests()
    await client.send_to_device_messages()
    return response


async def until(what, condition, *clients):
    """Steps every client until `condition()` holds."""
    for _ in range(STEPS):
        if condition():
            return
        for client, timeline in clients:
            await step(client, timeline, timeout=500)
    check(condition(), f"timed out waiting until {what}")


def device(client, user_id, device_id):
    return client.device_store[user_id].get(device_id)


async def main():
    stores = tempfile.TemporaryDirectory(prefix="nio-e2ee-")
    alice = await login(ALICE, ALICE_PASSWORD, "alice's laptop", f"{stores.name}")
    bob = await login(BOB, BOB_PASSWORD, "bob's phone", f"{stores.name}")
    alice_seen, bob_seen = Timeline(), Timeline()
    await step(alice, alice_seen, timeout=0)
    await step(bob, bob_seen, timeout=0)

    # --- 1. Two users in an encrypted room ---------------------------------
    created = await alice.room_create(
        name="secrets",
        invite=[BOB],
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    check(isinstance(created, RoomCreateResponse), f"createRoom: {created}")
    room_id = created.room_id
    await until("bob is invited", lambda: room_id in bob.invited_rooms, (bob, bob_seen))
    joined = await bob.join(room_id)
    check(isinstance(joined, JoinResponse), f"join: {joined}")
    await until(
        "each knows the other's device",
        lambda: device(alice, BOB, bob.device_id) and device(bob, ALICE, alice.device_id),
        (alice, alice_seen),
        (bob, bob_seen),
    )

    sent = await alice.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "hello bob"},
        ignore_unverified_devices=True,
    )
    check(isinstance(sent, RoomSendResponse), f"send: {sent}")
    await until("bob decrypts alice's message", lambda: "hello bob" in bob_seen.texts(), (bob, bob_seen))
    sent = await bob.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "hello alice"},
        ignore_unverified_devices=True,
    )
    check(isinstance(sent, RoomSendResponse), f"send: {sent}")
    await until(
        "alice decrypts bob's message",
        lambda: "hello alice" in alice_seen.texts(),
        (alice, alice_seen),
    )
    check(not bob_seen.undecrypted() and not alice_seen.undecrypted(), "undecryptable events")
    log("alice and bob decrypt each other's messages")

    # --- 2. A new device of alice's gets the old keys by key sharing -------
    phone = await login(ALICE, ALICE_PASSWORD, "alice's phone", f"{stores.name}")
    phone_seen = Timeline()
    await step(phone, phone_seen, timeout=0)
    old = [e for e in phone_seen.undecrypted() if e.sender == BOB]
    check(len(old) == 1, f"the new device sees bob's old message, encrypted: {phone_seen.events}")
    old = old[0]
    await until(
        "alice's devices know each other",
        lambda: device(alice, ALICE, phone.device_id) and device(phone, ALICE, alice.device_id),
        (alice, alice_seen),
        (phone, phone_seen),
    )
    # Key sharing between one's own devices needs them to trust each other.
    alice.verify_device(device(alice, ALICE, phone.device_id))
    phone.verify_device(device(phone, ALICE, alice.device_id))
    requested = await phone.request_room_key(old)
    check(isinstance(requested, RoomKeyRequestResponse), f"key request: {requested}")

    def decrypted_old():
        try:
            event = phone.decrypt_event(old)
        except EncryptionError:
            return False
        return isinstance(event, RoomMessageText) and event.body == "hello alice"

    await until(
        "the new device decrypts the old message with a forwarded key",
        decrypted_old,
        (alice, alice_seen),
        (phone, phone_seen),
    )
    log("the new device decrypts a message sent before it existed")

    # --- 3. Bob's next message reaches the new device directly -------------
    await until(
        "bob sees alice's new device",
        lambda: device(bob, ALICE, phone.device_id),
        (bob, bob_seen),
    )
    # nio keeps sending with a session already shared; a new device of a
    # member calls for a new one (other clients rotate on their own).
    bob.invalidate_outbound_session(room_id)
    sent = await bob.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "welcome, phone"},
        ignore_unverified_devices=True,
    )
    check(isinstance(sent, RoomSendResponse), f"send: {sent}")
    await until(
        "the new device decrypts bob's new message",
        lambda: "welcome, phone" in phone_seen.texts(),
        (phone, phone_seen),
    )
    await until(
        "alice's first device decrypts it too",
        lambda: "welcome, phone" in alice_seen.texts(),
        (alice, alice_seen),
    )
    log("bob's new message reaches both of alice's devices")

    for client in (alice, bob, phone):
        await client.close()
    stores.cleanup()
    log("ok")


asyncio.run(main())
