"""Fixtures that start throwaway RabbitMQ and NATS servers on loopback ports (issue 20)."""
