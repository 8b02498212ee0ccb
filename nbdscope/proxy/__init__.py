"""The transparent debugging relay (`nbdscope proxy`)."""
