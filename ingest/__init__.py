"""The Socket.IO ingest service: auth, validation, rooms and presence, the batch writer."""
