"""placeholder"""
def main() -> None:
    print("todo")
