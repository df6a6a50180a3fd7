"""Redis backends for running many processes as one cluster.

``client`` builds connections and names keys; ``broker`` carries publications
and control messages between processes over Redis pub/sub; ``subscriber``
keeps the process subscribed across Redis outages, one ``link`` (connection
and reader) per Redis node; ``state`` holds what every process must see.
"""
