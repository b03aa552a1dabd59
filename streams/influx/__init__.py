"""InfluxDB: the shape of every point (a series key that depends only on the item) and the sinks
that return only once the server accepted a batch (v2 API, 1.x ``/write``, or a file)."""
