"""The input catalog: reading DREaM (or a mapped catalog), selection per unit, the mock, the check."""
