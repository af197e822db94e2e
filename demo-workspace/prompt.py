# Select a line (or put the cursor on it) and right-click "Analyze Selection".
def greet(name):
    print("hello", name)

numbers = [1, 2, 3, 4]
total = sum(numbers)
for i in range(10):
    print(i)
