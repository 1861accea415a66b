"""lambdalake: lambda-architecture analytics platform."""

__version__ = "0.1.0"
