"""The bundled minimal connector: routing tables, CCP route broadcasting, forwarding."""
