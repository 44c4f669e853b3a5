-- The node holding a device's live session (NULL when offline): shown with every device and used
-- to list the devices connected to one node. Same liveness rule as device_online().
CREATE FUNCTION device_node(p_device_id BIGINT) RETURNS TEXT
    LANGUAGE sql STABLE
    AS $$
    SELECT c.node_id FROM device_connections c JOIN nodes n ON n.node_id = c.node_id
    WHERE c.device_id = p_device_id AND c.status = 'connected'
      AND n.heartbeat_at > now() - otahub_node_ttl()
    ORDER BY c.connected_at DESC, c.id DESC
    LIMIT 1
    $$;

