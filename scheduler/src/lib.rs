//! REAPI Execution and Operations services, queues, platform matching and worker sessions.
