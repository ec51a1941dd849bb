"""The Python client of the iDDS REST service (``{url}/idds/api/v1/``) and its push channel.

:class:`Client` finds its server from ``url``/``token`` arguments, else the
``IDDS_URL``/``IDDS_TOKEN`` environment variables, else the newest connection
file ``idds-<port>.json`` in the Jupyter runtime dir whose server process is
alive. Errors from the server are raised as :class:`IddsError` (status, one-line
message). The parts, each in its module:

- :mod:`.discovery` — where the service is (:func:`find_server`);
- :mod:`.transport` — the HTTP calls: one keep-alive connection per thread;
- :mod:`.push` — the live event stream (:class:`PushChannel`, ``client.push``);
- :mod:`.api` — :class:`Client`, one method per REST call, and the process's
  default client (:func:`get_client`, :func:`set_client`).
"""

from __future__ import annotations

from idds_jupyter.client.api import INLINE_BLOB, TERMINAL, Client, get_client, set_client
from idds_jupyter.client.discovery import find_server
from idds_jupyter.client.errors import IddsError
from idds_jupyter.client.push import Listener, PushChannel
from idds_jupyter.client.transport import API_PREFIX, Transport

__all__ = [
    "API_PREFIX",
    "INLINE_BLOB",
    "TERMINAL",
    "Client",
    "IddsError",
    "Listener",
    "PushChannel",
    "Transport",
    "find_server",
    "get_client",
    "set_client",
]
