-- Generated from the SQLAlchemy tables by `make sql`; a test fails if they disagree.

GRANT ALL PRIVILEGES ON `orchestrator`.* TO 'saga'@'%';
GRANT ALL PRIVILEGES ON `service_a`.* TO 'saga'@'%';
GRANT ALL PRIVILEGES ON `service_b`.* TO 'saga'@'%';
GRANT ALL PRIVILEGES ON `service_c`.* TO 'saga'@'%';
