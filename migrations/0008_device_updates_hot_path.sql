-- Starting a rollout inserts one device_updates row per eligible device: 10,000 rows when a large
-- fleet becomes eligible at once. Foreign-key checks are per-row triggers, and three of the four
-- cost more than the rest of that insert together. They go; what they guaranteed stays:
--   org_id        follows from device_id (a device's updates cascade with the device, and the
--                 device with its org);
--   deployment_id and firmware_id keep their ON DELETE SET NULL meaning through the statement-level
--                 triggers below, which run on the rare delete instead of on every hot insert.
-- The rows reference deployments and firmwares read in the same transaction (a deployment's
-- firmware cannot be deleted: deployments.firmware_id is ON DELETE RESTRICT).
ALTER TABLE device_updates DROP CONSTRAINT device_updates_org_id_fkey;
ALTER TABLE device_updates DROP CONSTRAINT device_updates_deployment_id_fkey;
ALTER TABLE device_updates DROP CONSTRAINT device_updates_firmware_id_fkey;

-- Slot counting uses device_updates_deployment_status (deployment_id, status) just as well.
DROP INDEX device_updates_deployment_in_flight;

CREATE FUNCTION device_updates_forget_deployments() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE device_updates u SET deployment_id = NULL FROM gone WHERE u.deployment_id = gone.id;
    RETURN NULL;
END $$;
CREATE TRIGGER deployments_forget_device_updates AFTER DELETE ON deployments
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION device_updates_forget_deployments();

CREATE FUNCTION device_updates_forget_firmwares() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE device_updates u SET firmware_id = NULL FROM gone WHERE u.firmware_id = gone.id;
    RETURN NULL;
END $$;
CREATE TRIGGER firmwares_forget_device_updates AFTER DELETE ON firmwares
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION device_updates_forget_firmwares();
