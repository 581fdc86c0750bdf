-- Generated from the SQLAlchemy tables by `make sql`; a test fails if they disagree.

CREATE DATABASE IF NOT EXISTS `service_b`;
USE `service_b`;

CREATE TABLE table_b (
	id INTEGER NOT NULL AUTO_INCREMENT,
	saga_id VARCHAR(64) NOT NULL,
	address VARCHAR(255),
	status VARCHAR(16) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (saga_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE INDEX ix_table_b_status ON table_b (status);
