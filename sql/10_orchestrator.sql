-- Generated from the SQLAlchemy tables by `make sql`; a test fails if they disagree.

CREATE DATABASE IF NOT EXISTS `orchestrator`;
USE `orchestrator`;

CREATE TABLE saga_events (
	id BIGINT NOT NULL AUTO_INCREMENT,
	saga_id VARCHAR(36) NOT NULL,
	step VARCHAR(8) NOT NULL,
	action VARCHAR(16) NOT NULL,
	attempt INTEGER NOT NULL,
	http_status INTEGER,
	outcome VARCHAR(16) NOT NULL,
	latency_ms INTEGER NOT NULL,
	error TEXT,
	orchestrator VARCHAR(64) NOT NULL,
	at DATETIME(6) NOT NULL,
	PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE INDEX ix_saga_events_saga_id ON saga_events (saga_id, id);

CREATE TABLE sagas (
	id VARCHAR(36) NOT NULL,
	status VARCHAR(24) NOT NULL,
	input TEXT NOT NULL,
	faults TEXT NOT NULL,
	current_step INTEGER NOT NULL,
	failed_step VARCHAR(8),
	reason VARCHAR(16),
	error TEXT,
	compensation_error TEXT,
	compensation_rounds INTEGER NOT NULL,
	idempotency_key VARCHAR(128),
	request_hash VARCHAR(64),
	lease_owner VARCHAR(64),
	lease_expires_at DATETIME(6),
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (idempotency_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE INDEX ix_sagas_created_at ON sagas (created_at);

CREATE INDEX ix_sagas_status_created_at ON sagas (status, created_at);

CREATE INDEX ix_sagas_status_lease ON sagas (status, lease_expires_at);

CREATE INDEX ix_sagas_status_updated_at ON sagas (status, updated_at);
