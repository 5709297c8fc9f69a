"""Real-component test doubles (test PKI, SoftHSM token) shared by the tests and the demo."""
