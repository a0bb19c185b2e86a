"""Who may drive the web app: a random key per start, carried in the URL, and same-origin WebSockets.

wslink (trame's transport) answers no call of a client whose hello lacked the server's secret, but
trame's default secret is the public "wslink-secret": without a key of its own, any page open in a
browser on this machine that finds the port could drive the app (read the image, write --output).
So each start makes its own key (secrets.token_urlsafe) and prints it only in the URL; trame's page
reads `?secret=` and removes it from the address bar.

A WebSocket handshake whose Origin is not the app's own address is refused (403) before wslink sees
it: a page of another site has no business there even with the key, and the Host must be a name the
app was bound to, so a site whose DNS name points at this machine (DNS rebinding) is refused too.
"""

import ipaddress
import secrets
from urllib.parse import urlsplit

def newKey():
    return secrets.token_urlsafe(32)


def urlWithKey(url, key):
    return f"{url}?secret={key}"


def isLoopback(host):
    """A name or address of this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _isWildcard(host):
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _hostAndPort(netloc):
    """("name", port) of "name:port" / "[v6]:port"; port None when absent or not a number."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def originAllowed(origin, hostHeader, boundHost, port):
    """True when a WebSocket handshake comes from the app's own page: Origin is http(s)://Host, Host
    names the bound address (any loopback name for a loopback bind; any name for a wildcard bind,
    where the key is the only guard) and the app's port."""
    if not origin or not hostHeader:
        return False
    origin = urlsplit(origin)
    if origin.scheme not in ("http", "https") or origin.netloc.lower() != hostHeader.lower():
        return False
    name, hostPort = _hostAndPort(hostHeader)
    if hostPort != port:
        return False
    if _isWildcard(boundHost):
        return True
    if isLoopback(boundHost):
        return isLoopback(name)
    return name == boundHost.strip("[]").lower()


def protect(server, key, boundHost, wsPath="/ws"):
    """Make `key` the server's wslink secret and refuse foreign-origin WebSockets; call before start."""

    def bind(webServer):
        from aiohttp import web

        server.protocol.updateSecret(key)

        @web.middleware
        async def sameOrigin(request, handler):
            if request.path == wsPath and not originAllowed(request.headers.get("Origin"), request.host, boundHost,
                                                            server.port):
                raise web.HTTPForbidden(text="this app accepts WebSocket connections from its own page only")
            return await handler(request)

        webServer.app.middlewares.append(sameOrigin)

    server.controller.on_server_bind.add(bind)
