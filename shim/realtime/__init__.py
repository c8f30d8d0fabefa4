"""The live room's realtime hub: the Supabase Realtime protocol over WebSocket, REST
broadcast and Server-Sent Events, fed from the database's room log."""

from shim.realtime.authorize import Principal
from shim.realtime.hub import StatsSource
from shim.realtime.service import Realtime
from shim.realtime.settings import ENV_DOC, HubSettings
from shim.realtime.socket import TokenRejectedError

__all__ = ["ENV_DOC", "HubSettings", "Principal", "Realtime", "StatsSource", "TokenRejectedError"]
