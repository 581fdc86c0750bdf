-- Generated from the SQLAlchemy tables by `make sql`; a test fails if they disagree.

CREATE DATABASE IF NOT EXISTS `service_c`;
USE `service_c`;

CREATE TABLE table_c (
	id INTEGER NOT NULL AUTO_INCREMENT,
	saga_id VARCHAR(64) NOT NULL,
	payment_method VARCHAR(255),
	status VARCHAR(16) NOT NULL,
	created_at DATETIME(6) NOT NULL,
	updated_at DATETIME(6) NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (saga_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE INDEX ix_table_c_status ON table_c (status);
