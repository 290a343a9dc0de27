-- Webhook retries run for STREAMSTATS_WEBHOOK_RETRY_FOR from when a delivery was queued;
-- `streamstats webhooks --requeue` queues a dead one again, starting a new period.
ALTER TABLE webhook_deliveries ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();

COMMENT ON COLUMN webhook_deliveries.queued_at IS 'Start of the retry period: queued, or re-queued from dead';
