from chaos.cli import chaos_group

chaos_group(prog_name="raftmq chaos")
