"""Library code behind the command line: inspect, repair and the demo."""
